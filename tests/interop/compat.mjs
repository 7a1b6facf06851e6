// What js-libp2p 3 takes from newer Node.js, given to older ones, so the bundle runs on the
// Node.js 18 that Debian 12 ships as well as on Node.js 20 and later. Imported first.
import { webcrypto } from 'node:crypto'

// Node.js 22 and later.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

// Node.js 19 and later.
if (typeof globalThis.CustomEvent !== 'function') {
  globalThis.CustomEvent = class CustomEvent extends Event {
    #detail
    constructor (type, options) {
      super(type, options)
      this.#detail = options?.detail ?? null
    }

    get detail () {
      return this.#detail
    }
  }
}

// Node.js 19 and later (18 has it behind a flag).
if (globalThis.crypto === undefined) {
  globalThis.crypto = webcrypto
}
