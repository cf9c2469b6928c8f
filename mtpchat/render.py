"""Chat templates rendered in a separate process with real limits.

Jinja's sandbox stops a template from running code, but not from working forever (nested loops),
filling memory (a string doubled 30 times) or overflowing the stack (thousands of nested
`{% if %}`): it cannot count work. So the template runs in a small worker process that this module
starts once per template and talks to over pipes (one JSON line each way): the worker has an
address-space limit, its output is capped, a RecursionError or MemoryError is an answer like any
other, and a render that takes too long gets the worker killed (a new one starts on the next
call). A normal turn costs a pipe round trip (well under a millisecond) on top of the rendering.

The worker imports nothing but the standard library and jinja2.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import weakref

RENDER_SECONDS = 2.0             # wall clock for one render (a normal one takes milliseconds)
SECONDS_PER_MESSAGE = 0.002      # ... plus this per message, for long conversations
MEMORY_BYTES = 256 << 20         # the worker's address space (it needs ~25 MiB)
MAX_OUTPUT = 1 << 20             # characters of rendered text, plus OUTPUT_PER_MESSAGE each
OUTPUT_PER_MESSAGE = 1024        # (message contents are sentinels while rendering: see chat.py)
START_SECONDS = 30.0             # starting Python and importing jinja2 on a busy machine


class TemplateError(ValueError):
    """The template does not parse, failed, or went past a limit; the message says which."""


# -- the worker side ----------------------------------------------------------------------------

def _limit_memory() -> None:
    try:
        import resource
    except ImportError:  # not on a POSIX system: the wall-clock limit still holds
        return
    for name in ("RLIMIT_AS", "RLIMIT_DATA"):
        lim = getattr(resource, name, None)
        if lim is None:
            continue
        try:
            resource.setrlimit(lim, (MEMORY_BYTES, MEMORY_BYTES))
            return
        except (ValueError, OSError):  # macOS refuses RLIMIT_AS: try the next one
            continue


def _environment():
    from datetime import datetime

    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Raised(Exception):
        pass

    def raise_exception(msg):
        raise Raised(str(msg))

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(str(fmt))
    return env, Raised


def _answer(fn):
    """{"ok": result} or {"error": one line} for whatever fn does."""
    try:
        return {"ok": fn()}
    except RecursionError:
        return {"error": "is nested too deeply (recursion limit)"}
    except MemoryError:
        return {"error": f"needs more than {MEMORY_BYTES >> 20} MiB of memory"}
    except Exception as e:  # noqa: BLE001 - a sandbox violation, a template bug, raise_exception
        text = " ".join(str(e).split()) or type(e).__name__
        return {"error": text[:300]}


def serve() -> None:
    """The worker's loop: the first line holds the template source, each later one a render."""
    import signal

    # Ctrl-C is for the chat (it stops an answer), not for its template worker; the worker ends
    # when its stdin closes, i.e. with the process that started it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _limit_memory()
    env, raised = _environment()
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    template = None

    def reply(obj):
        try:
            data = json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")
        except MemoryError:
            data = b'{"error": "output too large"}'
        out.write(data + b"\n")
        out.flush()

    for line in inp:
        try:
            req = json.loads(line)
        except (ValueError, RecursionError, MemoryError):
            reply({"error": "bad request"})
            continue
        if "template" in req:
            def parse():
                nonlocal template
                template = env.from_string(req["template"])
                return True

            a = _answer(parse)
            if "error" in a:
                a["error"] = f"does not parse: {a['error']}"
            reply(a)
            continue
        if template is None:
            reply({"error": "no template"})
            continue
        limit = int(req.get("max_output", MAX_OUTPUT))

        def render():
            text = template.render(messages=req["messages"], add_generation_prompt=req["add_generation_prompt"],
                                   **req.get("extra", {}))
            if len(text) > limit:
                raise OverflowError(f"renders {len(text):,} characters, more than the limit of {limit:,}")
            return text

        a = _answer(render)
        if "error" in a and not a["error"].startswith(("renders", "is nested", "needs more")):
            a["error"] = f"failed: {a['error']}"
        reply(a)


# -- the caller's side --------------------------------------------------------------------------

def _kill(proc) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    for f in (proc.stdin, proc.stdout):
        try:
            f.close()
        except OSError:
            pass


class TemplateWorker:
    """One chat template in its worker process. `render` raises TemplateError (one line)."""

    def __init__(self, source: str):
        self.source = source
        self.proc = None
        self._buf = b""
        self._start()

    def _start(self) -> None:
        pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (pkg_parent, os.environ.get("PYTHONPATH")) if p))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from mtpchat.render import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
            start_new_session=True)   # outside the terminal's process group: its signals are not for it
        self._finalizer = weakref.finalize(self, _kill, self.proc)
        self._buf = b""
        a = self._call({"template": self.source}, START_SECONDS)
        if "error" in a:
            self.close()
            raise TemplateError(a["error"])

    def _call(self, req: dict, seconds: float) -> dict:
        proc = self.proc
        try:
            proc.stdin.write(json.dumps(req, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.close()
            raise TemplateError("failed: its worker process ended") from None
        deadline = time.monotonic() + seconds
        fd = proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            ready = select.select([fd], [], [], max(left, 0))[0] if left > 0 else []
            if not ready:
                self.close()
                raise TemplateError(f"took more than {seconds:.3g} s to render (stopped)")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                self.close()
                raise TemplateError("failed: its worker process ended (out of memory?)")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def render(self, messages: list[dict], add_generation_prompt: bool, extra: dict) -> str:
        n = len(messages)
        req = {"messages": messages, "add_generation_prompt": add_generation_prompt, "extra": extra,
               "max_output": MAX_OUTPUT + OUTPUT_PER_MESSAGE * n}
        seconds = RENDER_SECONDS + SECONDS_PER_MESSAGE * n
        if self.proc is not None and self.proc.poll() is not None:
            self.close()   # the worker died between renders (killed from outside): start another
        if self.proc is None:
            self._start()
        a = self._call(req, seconds)
        if "error" in a:
            raise TemplateError(a["error"])
        return a["ok"]

    def close(self) -> None:
        if self.proc is not None:
            self._finalizer()
            self.proc = None
