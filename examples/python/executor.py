#!/usr/bin/env python3
"""A goop executor in Python, standard library only, written by hand against the protocol.

It serves both modes: it reads job lines from stdin until EOF (oneshot: one line then EOF;
daemon: the check, then many jobs and cancels), runs jobs on threads up to CAPACITY at once,
answers each job exactly once by its job_id, finishes running jobs at EOF and exits 0.

Job types:
  calculate  {"expression": "(a + b) * 2 ^ c", "parameters": {"a": 1, "b": 2, "c": 3}}
             -> {"expression": ..., "value": 24}. Parsed with `ast`; only numbers, parameter
             names, + - * / % ** ^ (as power), unary +/-, and the functions sqrt, abs, min, max,
             floor, ceil, round are allowed. Nothing is ever passed to eval().
  echo       returns the payload; {"sleep_ms": N} logs "sleeping N ms", then sleeps (a cancel
             wakes it early).
"""

import ast
import json
import math
import os
import sys
import threading

CAPACITY = int(os.environ.get("PY_EXECUTOR_CAPACITY", "4"))
VERSION = "1.0.0"

_out_lock = threading.Lock()


def emit(obj):
    """Writes one whole line; the lock keeps lines of concurrent jobs from mixing."""
    line = json.dumps(obj, separators=(",", ":")) + "\n"
    with _out_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


# ---- calculate -----------------------------------------------------------------------------

FUNCTIONS = {
    "sqrt": (math.sqrt, 1),
    "abs": (abs, 1),
    "floor": (math.floor, 1),
    "ceil": (math.ceil, 1),
    "round": (round, 1),
    "min": (min, None),
    "max": (max, None),
}
CONSTANTS = {"pi": math.pi, "e": math.e}
MAX_EXPRESSION = 64 * 1024


class CalcError(Exception):
    pass


def evaluate(expression, parameters):
    if not isinstance(expression, str):
        raise CalcError("expression must be a string")
    if len(expression) > MAX_EXPRESSION:
        raise CalcError("expression is too long")
    # `^` means power here, as in the Rust example.
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError as err:
        raise CalcError(f"syntax error at column {err.offset}: {err.msg}") from None
    except RecursionError:
        raise CalcError("expression nests too deeply") from None
    try:
        value = _eval(tree.body, parameters)
    except RecursionError:
        raise CalcError("expression nests too deeply") from None
    except OverflowError:
        raise CalcError("result is not a finite number") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise CalcError("result is not a finite number")
    return value


def _eval(node, params):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in params:
            value = params[node.id]
            if type(value) not in (int, float):
                raise CalcError(f"parameter `{node.id}` is not a number")
            return value
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise CalcError(f"unknown name `{node.id}`")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        operand = _eval(node.operand, params)
        return operand if isinstance(node.op, ast.UAdd) else -operand
    if isinstance(node, ast.BinOp):
        left = _eval(node.left, params)
        right = _eval(node.right, params)
        op = node.op
        if isinstance(op, ast.Add):
            return left + right
        if isinstance(op, ast.Sub):
            return left - right
        if isinstance(op, ast.Mult):
            return left * right
        if isinstance(op, (ast.Div, ast.Mod)):
            if right == 0:
                raise CalcError("division by zero")
            return left / right if isinstance(op, ast.Div) else math.fmod(left, right)
        if isinstance(op, ast.Pow):
            if abs(right) > 10000:
                raise CalcError("exponent is too large")
            result = left ** right
            if isinstance(result, complex):
                raise CalcError("result is not a finite number")
            return result
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        name = node.func.id
        if name not in FUNCTIONS:
            raise CalcError(f"unknown function `{name}`")
        func, arity = FUNCTIONS[name]
        args = [_eval(arg, params) for arg in node.args]
        if arity is not None and len(args) != arity:
            raise CalcError(f"`{name}` takes {arity} argument(s), got {len(args)}")
        if not args:
            raise CalcError(f"`{name}` takes at least 1 argument(s), got 0")
        try:
            return func(*args)
        except ValueError:
            raise CalcError("result is not a finite number") from None
    raise CalcError(f"unsupported syntax: {type(node).__name__}")


def calculate(job, cancelled):
    payload = job.get("payload")
    if not isinstance(payload, dict) or "expression" not in payload:
        raise CalcError("payload needs an `expression`")
    params = payload.get("parameters") or {}
    if not isinstance(params, dict):
        raise CalcError("`parameters` must be an object")
    emit({"job_id": job["job_id"], "status": "progress", "pct": 50, "msg": "evaluating"})
    value = evaluate(payload["expression"], params)
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        value = int(value)
    return {"expression": payload["expression"], "value": value}


def echo(job, cancelled):
    payload = job.get("payload")
    if isinstance(payload, dict) and isinstance(payload.get("sleep_ms"), (int, float)):
        emit({"job_id": job["job_id"], "status": "log", "msg": f"sleeping {payload['sleep_ms']} ms"})
        if cancelled.wait(payload["sleep_ms"] / 1000.0):
            raise CalcError("cancelled")
    return payload


HANDLERS = {"calculate": calculate, "echo": echo}

# ---- the protocol loop ---------------------------------------------------------------------

_slots = threading.BoundedSemaphore(CAPACITY)
_live = {}  # job_id -> threading.Event, set on cancel
_live_lock = threading.Lock()


def run_job(job, handler, cancelled):
    job_id = job["job_id"]
    # Wait here for a free slot, not in the reader: the reader must stay free to read cancels.
    _slots.acquire()
    try:
        if cancelled.is_set():
            raise CalcError("cancelled before it started")
        result = handler(job, cancelled)
        line = {"job_id": job_id, "status": "done", "result": result}
    except CalcError as err:
        line = {"job_id": job_id, "status": "error", "error": str(err)}
    except Exception as err:  # noqa: BLE001 - any failure of one job must not stop the others
        line = {"job_id": job_id, "status": "error", "error": f"{type(err).__name__}: {err}"}
    if "attempt" in job:
        line["attempt"] = job["attempt"]
    emit(line)
    with _live_lock:
        _live.pop(job_id, None)
    _slots.release()


def main():
    threads = []
    for raw in sys.stdin:
        raw = raw.strip()
        if not raw:
            continue
        try:
            # Keep integers exact (Python ints are unbounded); floats keep their value.
            job = json.loads(raw)
        except ValueError as err:
            emit({"status": "log", "msg": f"malformed input line: {err}"})
            continue
        if not isinstance(job, dict) or not isinstance(job.get("job_id"), str):
            emit({"status": "log", "msg": "input line has no job_id"})
            continue
        job_id, kind = job["job_id"], job.get("type")
        if kind == "__check__":
            emit({"job_id": job_id, "status": "done", "result": {
                "types": sorted(HANDLERS), "capacity": CAPACITY, "version": VERSION}})
            continue
        if kind == "__cancel__":
            with _live_lock:
                event = _live.get(job_id)
            if event is not None:
                event.set()
            continue
        handler = HANDLERS.get(kind)
        if handler is None:
            emit({"job_id": job_id, "status": "error", "error": f"unsupported job type {kind!r}"})
            continue
        cancelled = threading.Event()
        with _live_lock:
            if job_id in _live:
                emit({"job_id": job_id, "status": "error", "error": "job is already running"})
                continue
            _live[job_id] = cancelled
        # At most CAPACITY jobs run at once: the thread waits for a slot before it runs the job.
        thread = threading.Thread(target=run_job, args=(job, handler, cancelled), daemon=True)
        thread.start()
        threads = [t for t in threads if t.is_alive()]
        threads.append(thread)
    # EOF: finish what is running, then exit 0.
    for thread in threads:
        thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
