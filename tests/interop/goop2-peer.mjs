// A peer on js-libp2p that speaks Goop²'s wire, for goop's interoperability test
// (node/tests/node/interop.rs).
//
// It dials a goop node over TCP with Noise and Yamux, then does what a Goop² peer does on
// `/goop/mq/1.0.0`: one message per stream, a JSON line answered by a JSON `ack` line, the
// `identity` / `identity.response` exchange, and, given a group, the `join` / `welcome` of a
// Goop² member that answers `ping` with `pong`. What it saw goes to stdout as JSON lines:
//
//   {"event":"report", ...}      once every step is done or the deadline has passed
//   {"event":"pong", ...}        each time it answered the group host's `ping`
//   {"event":"group_msg", ...}   each `msg` the group's host sends after the report
//   {"event":"bye", ...}         when standard input closes; then it stops and exits 0
//   {"event":"failed", ...}      when it cannot go on (it exits 1)
//
// Usage: node goop2-peer.mjs --dial <multiaddr ending in /p2p/<id>> --name <display name>
//          [--group <group id>] [--timeout-ms <ms>]

import './compat.mjs'
import { randomUUID } from 'node:crypto'
import { noise } from '@chainsafe/libp2p-noise'
import { identify } from '@libp2p/identify'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'

const MQ_PROTOCOL = '/goop/mq/1.0.0'
// Goop²'s MQ timings: the sender's stream open and ack wait, the pause before its
// single retry, and the receiver's read deadline.
const OPEN_TIMEOUT_MS = 2000
const ACK_TIMEOUT_MS = 2000
const RETRY_PAUSE_MS = 300
const READ_TIMEOUT_MS = 3000
// How long a Goop² join waits for the welcome.
const JOIN_TIMEOUT_MS = 5000
// A line longer than this is not a frame this peer expects.
const MAX_LINE_BYTES = 1024 * 1024

function parseArgs (argv) {
  const args = { timeoutMs: 20000 }
  for (let i = 0; i < argv.length; i += 2) {
    const [key, value] = [argv[i], argv[i + 1]]
    if (value === undefined) throw new Error(`missing value for ${key}`)
    switch (key) {
      case '--dial': args.dial = value; break
      case '--name': args.name = value; break
      case '--group': args.group = value; break
      case '--timeout-ms': args.timeoutMs = Number(value); break
      default: throw new Error(`unknown argument ${key}`)
    }
  }
  if (args.dial === undefined || args.name === undefined) {
    throw new Error('usage: goop2-peer --dial <multiaddr> --name <name> [--group <id>] [--timeout-ms <ms>]')
  }
  return args
}

function emit (event) {
  process.stdout.write(JSON.stringify(event) + '\n')
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Something that happens once, awaited with a deadline. */
function later () {
  let resolve
  const promise = new Promise((r) => { resolve = r })
  return { promise, resolve, done: false }
}

async function within (ms, promise, what) {
  let timer
  const deadline = new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([promise, deadline])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * Reads one newline-terminated JSON value from `stream`, as Goop²'s decoder reads one value;
 * what follows it on the stream is left unread. A stream that ends without a newline is
 * parsed as it is (Goop² does not need the newline either).
 */
async function readJsonLine (stream, ms) {
  const chunks = []
  let size = 0
  const read = (async () => {
    for await (const chunk of stream) {
      const bytes = chunk.subarray()
      const newline = bytes.indexOf(0x0a)
      if (newline >= 0) {
        chunks.push(bytes.subarray(0, newline))
        return
      }
      chunks.push(bytes)
      size += bytes.length
      if (size > MAX_LINE_BYTES) throw new Error(`line over ${MAX_LINE_BYTES} bytes`)
    }
  })()
  await within(ms, read, 'reading a frame')
  const text = Buffer.concat(chunks).toString('utf8')
  return { text, value: JSON.parse(text) }
}

async function writeLine (stream, value) {
  const bytes = new TextEncoder().encode(JSON.stringify(value) + '\n')
  if (!stream.send(bytes)) await stream.onDrain()
}

/** Goop² closes a stream whole once it has its answer; closing here does the same. */
async function closeStream (stream) {
  try {
    await stream.close({ signal: AbortSignal.timeout(READ_TIMEOUT_MS) })
  } catch (err) {
    stream.abort(err)
  }
}

async function main () {
  const args = parseArgs(process.argv.slice(2))
  const deadline = Date.now() + args.timeoutMs
  const left = () => Math.max(1, deadline - Date.now())

  const node = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify() }
  })
  const me = node.peerId.toString()
  const errors = []
  const received = [] // every message taken on an inbound stream, in order
  const sends = [] // every send, with the ack it got
  let seq = 0 // one counter for every send, as Goop² keeps

  const identityResponse = later()
  const askedForIdentity = later()
  const answeredIdentity = later()
  const welcome = later()
  const pongs = []
  let reported = false

  /** Goop²'s `Send`: a new stream per attempt, one message, one ack, one retry after 300 ms. */
  async function send (peer, topic, payload) {
    const record = { topic, attempts: [] }
    sends.push(record)
    for (let attempt = 1; attempt <= 2; attempt++) {
      const id = randomUUID()
      const frame = { type: 'msg', id, seq: ++seq, topic, payload }
      const tried = { id, seq: frame.seq }
      record.attempts.push(tried)
      let stream
      try {
        stream = await node.dialProtocol(peer, MQ_PROTOCOL, {
          signal: AbortSignal.timeout(OPEN_TIMEOUT_MS)
        })
        await writeLine(stream, frame)
        const { value: ack } = await readJsonLine(stream, ACK_TIMEOUT_MS)
        tried.ack = ack
        if (ack?.id !== id) throw new Error(`ack ${JSON.stringify(ack)} does not name message ${id}`)
        await closeStream(stream)
        record.acked = true
        return record
      } catch (err) {
        tried.error = err.message
        if (stream !== undefined) stream.abort(err)
        if (attempt === 1) await sleep(RETRY_PAUSE_MS)
      }
    }
    record.acked = false
    errors.push(`send on ${topic} not acknowledged: ${JSON.stringify(record.attempts)}`)
    return record
  }

  /** Goop²'s `handleIncoming`: read one message, ack it at once, close, then act on it. */
  async function onStream (stream, connection) {
    const from = connection.remotePeer
    let msg
    try {
      const { value } = await readJsonLine(stream, READ_TIMEOUT_MS)
      msg = value
      await writeLine(stream, { type: 'ack', id: msg.id, seq: msg.seq })
      await closeStream(stream)
    } catch (err) {
      errors.push(`inbound mq stream from ${from}: ${err.message}`)
      stream.abort(err)
      return
    }
    received.push({ from: from.toString(), type: msg.type, id: msg.id, seq: msg.seq, topic: msg.topic, payload: msg.payload })
    const topic = String(msg.topic)
    if (topic === 'identity') {
      askedForIdentity.resolve({ from: from.toString(), frame: msg })
      const answer = await send(from, 'identity.response', { peerID: me, content: args.name, reachable: true })
      answeredIdentity.resolve(answer)
    } else if (topic === 'identity.response') {
      identityResponse.resolve({ from: from.toString(), frame: msg })
    } else if (topic.startsWith('group:')) {
      const [, group, kind] = topic.split(':')
      if (group !== args.group) return
      if (kind === 'welcome' || kind === 'error') {
        welcome.resolve({ from: from.toString(), kind, payload: msg.payload })
      } else if (kind === 'ping') {
        // Goop² answers asynchronously, envelope style.
        const pong = await send(from, `group:${group}:pong`, { type: 'pong', group })
        pongs.push(pong)
        emit({ event: 'pong', count: pongs.length, acked: pong.acked })
      } else if (kind === 'msg' && reported) {
        emit({ event: 'group_msg', from: from.toString(), payload: msg.payload })
      }
    }
  }

  await node.handle(MQ_PROTOCOL, onStream, { maxInboundStreams: 256 })

  const target = multiaddr(args.dial)
  const connection = await within(left(), node.dial(target), 'dialling the goop node')
  const goop = connection.remotePeer
  const report = {
    event: 'report',
    peer_id: me,
    connection: {
      remote_peer: goop.toString(),
      remote_addr: connection.remoteAddr.toString(),
      encryption: connection.encryption,
      multiplexer: connection.multiplexer,
      status: connection.status
    }
  }

  // Asks the goop node for its name and waits for the answer.
  report.identity_request = await send(goop, 'identity', null)
  try {
    report.identity_response = await within(left(), identityResponse.promise, 'identity.response')
  } catch (err) { errors.push(err.message) }

  // The goop node asks for this peer's name when it connects; the answer must be acked.
  try {
    report.asked = await within(left(), askedForIdentity.promise, 'identity request from goop')
    report.identity_answer = await within(left(), answeredIdentity.promise, 'identity answer')
  } catch (err) { errors.push(err.message) }

  if (args.group !== undefined) {
    const group = args.group
    report.join = await send(goop, `group:${group}:join`, { type: 'join', group })
    try {
      report.welcome = await within(Math.min(JOIN_TIMEOUT_MS, left()), welcome.promise, 'welcome')
    } catch (err) { errors.push(err.message) }
  }

  // What identify learned of the goop node: its agent and its protocols.
  try {
    const peer = await within(left(), (async () => {
      for (;;) {
        const found = await node.peerStore.get(goop).catch(() => undefined)
        if (found?.protocols.includes(MQ_PROTOCOL)) return found
        await sleep(50)
      }
    })(), 'identify of the goop node')
    const agent = peer.metadata.get('AgentVersion')
    report.identify = {
      agent_version: agent === undefined ? null : new TextDecoder().decode(agent),
      protocols: peer.protocols
    }
  } catch (err) { errors.push(err.message) }

  report.connections = node.getConnections(goop).map((c) => ({ status: c.status, direction: c.direction }))
  report.errors = errors
  reported = true
  emit(report)

  // Stays up, answering pings and acking, until the test closes standard input.
  process.stdin.resume()
  await new Promise((resolve) => process.stdin.on('end', resolve).on('close', resolve))
  emit({
    event: 'bye',
    pongs: pongs.length,
    pongs_acked: pongs.filter((p) => p.acked).length,
    received_topics: received.map((m) => m.topic),
    errors
  })
  await node.stop()
}

main().then(
  () => process.exit(0),
  (err) => {
    emit({ event: 'failed', error: err?.stack ?? String(err) })
    process.exit(1)
  }
)
