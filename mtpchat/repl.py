"""The interactive chat: prompt-toolkit for input, Rich for the streamed answer and its status.

While an answer streams:
- finished Markdown blocks are printed for good above a live region that holds only the block
  being written (its last lines when it is taller than the terminal) and the status line, so a
  long answer scrolls like any terminal output and is never duplicated in the scrollback;
- the status line is the answer's live statistics (measured tokens/s, tokens per step, acceptance
  by depth, speedup over plain decoding measured in this process), redrawn once more when the
  answer ends;
- the terminal does not echo what is typed: the keys are held and become the next prompt's
  text (never sent by themselves), so typing ahead neither lands inside the answer nor moves the
  live region.
"""
from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.markdown import Markdown
from rich.markup import escape
from rich.segment import Segment
from rich.text import Text

from .stats import Stats, status_line, tree_label

HELP = """commands:
  /help            this text
  /clear           forget the conversation (the system prompt stays)
  /system TEXT     set the system prompt (and clear)
  /stats           statistics of the last answer and of the session
  /mtp on|off      switch multi-token prediction
  /save FILE       save the conversation as JSON
  /load FILE       load a saved conversation
  /exit            leave (Ctrl-D too)
Enter sends; Alt-Enter (or Esc then Enter) starts a new line; a message that starts with \"\"\"
goes on over several lines until a line ends with \"\"\"; Ctrl-C stops an answer.
What you type while an answer streams waits in the next prompt."""

MULTILINE = '"""'
REFRESH_S = 1 / 12          # the live region is redrawn at most this often


def data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "mtpchat"


# -- pure helpers -------------------------------------------------------------------------------

_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def finished_blocks(text: str) -> int:
    """Where the finished Markdown blocks of a text being written end: just after its last blank
    line outside a fenced code block that a line starting at the margin follows (an indented line
    could still belong to the block before: a list item's second paragraph). 0 when none."""
    pos, cut, fence, blank_end = 0, 0, None, None
    for line in text.splitlines(keepends=True):
        if blank_end is not None and line[:1] not in (" ", "\t", "\n", "\r"):
            cut = blank_end
        if not line.endswith("\n"):
            break  # a line still being written
        m = _FENCE.match(line)
        blank_end = None
        if fence is not None:
            if m and m.group(1) == fence:
                fence = None
        elif m:
            fence = m.group(1)
        elif not line.strip() and pos > 0:
            blank_end = pos + len(line)
        pos += len(line)
    return cut


_ESCAPE = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|O.|.)?", re.S)


def typed_text(data: bytes) -> str:
    """Keys typed while an answer streamed, as text for the next prompt: escape sequences
    (arrows, function keys, Alt-combinations) dropped, backspace applied, Enter kept as a line
    break inside the text (it is not sent), other control keys dropped, trailing breaks removed."""
    out: list[str] = []
    for ch in _ESCAPE.sub("", data.decode("utf-8", "ignore")):
        if ch in ("\x7f", "\b"):
            if out:
                out.pop()
        elif ch in ("\r", "\n"):
            out.append("\n")
        elif ch == "\t" or ch >= " ":
            out.append(ch)
        elif ch == "\x15":       # Ctrl-U: the line so far
            while out and out[-1] != "\n":
                out.pop()
    return "".join(out).strip("\n")


def multiline_start(text: str) -> tuple[str, bool] | None:
    """For a first line that opens a \"\"\" block: (its text after the quotes, whether the block
    closes on this line too); None for an ordinary line."""
    s = text.lstrip()
    if not s.startswith(MULTILINE):
        return None
    rest = s[len(MULTILINE):]
    if rest.rstrip().endswith(MULTILINE):
        return rest.rstrip()[:-len(MULTILINE)], True
    return rest, False


@contextmanager
def hold_typing(fd: int):
    """While an answer streams, keys typed are neither echoed nor left for the next prompt to
    read as input: they are collected (the yielded list gets the text when the block ends). Ctrl-C
    still interrupts. Does nothing when `fd` is not a terminal."""
    held: list[str] = []
    try:
        import termios

        old = termios.tcgetattr(fd)
    except (ImportError, OSError, ValueError):   # not a terminal, or not POSIX
        yield held
        return
    new = list(old)
    new[3] &= ~(termios.ECHO | termios.ICANON)
    new[6] = list(old[6])
    new[6][termios.VMIN], new[6][termios.VTIME] = 0, 0
    termios.tcsetattr(fd, termios.TCSANOW, new)
    try:
        yield held
    finally:
        data = b""
        try:
            while len(data) < 1 << 16:
                chunk = os.read(fd, 4096)   # VMIN 0: returns what is there, never waits
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        termios.tcsetattr(fd, termios.TCSANOW, old)
        held.append(typed_text(data))


class _Lines:
    """Rendered lines as a renderable."""

    def __init__(self, lines):
        self.lines = lines

    def __rich_console__(self, console, options):
        for line in self.lines:
            yield from line
            yield Segment.line()


class AnswerView:
    """An answer being streamed: its text, the lines already printed for good, and the live
    part (the rest, and the status line under it)."""

    def __init__(self, console: Console, *, markdown: bool, show_drafts: bool):
        self.console, self.markdown, self.show_drafts = console, markdown, show_drafts
        self.text = ""
        self.body = Text()        # the same text with accepted drafts coloured (no Markdown)
        self.cut = 0              # text[:cut] is finished and printed
        self.printed = 0          # rendered lines of text[:cut] printed for good

    def add(self, piece: str, from_draft: bool) -> None:
        self.text += piece
        self.body.append(piece, style="green" if (self.show_drafts and from_draft) else None)

    def _lines(self, end: int):
        if self.markdown:
            r = Markdown(self.text[:end])
        else:   # up to a line break: that break is not a line of its own
            r = self.body[:end - 1 if end and self.text[end - 1] == "\n" else end]
        return self.console.render_lines(r, self.console.options, pad=False)

    def finished(self):
        """Lines that became final since the last call (to print above the live region)."""
        cut = finished_blocks(self.text) if self.markdown else self.text.rfind("\n") + 1
        if cut <= self.cut:
            return None
        self.cut = cut
        lines = self._lines(cut)
        new, self.printed = lines[self.printed:], len(lines)
        return _Lines(new) if new else None

    def live(self, status: str, *, final: bool = False):
        lines = self._lines(len(self.text))[self.printed:] if self.text else []
        st = Text(status, style="dim")
        if not final:
            room = max(1, self.console.size.height - 1 - len(self.console.render_lines(st, pad=False)))
            lines = lines[-room:]
        return Group(_Lines(lines), st)


# -- the chat -----------------------------------------------------------------------------------

class Repl:
    def __init__(self, session, *, markdown: bool = True, show_drafts: bool = False, governor=None,
                 notes: list[str] | None = None):
        self.session = session
        self.engine = session.engine
        self.markdown = markdown and not show_drafts
        self.show_drafts = show_drafts
        self.governor = governor
        self.notes = notes or []
        self.console = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)
        self.pending = ""          # typed while the last answer streamed: the next prompt's text

    def error(self, msg: str) -> None:
        self.err.print(f"[red]mtpchat: error:[/] {escape(msg)}", highlight=False)

    def _prompt_session(self):
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory
        from prompt_toolkit.key_binding import KeyBindings

        kb = KeyBindings()

        @kb.add("escape", "enter")
        def _newline(event):
            event.current_buffer.insert_text("\n")

        d = data_dir()
        try:
            d.mkdir(parents=True, exist_ok=True)
            history = FileHistory(str(d / "history"))
        except OSError:
            history = None
        return PromptSession(history=history, key_bindings=kb, multiline=False)

    def _read(self, ps) -> str | None:
        """One message: a line (Alt-Enter breaks lines inside it), or a \"\"\" block. None at
        Ctrl-D."""
        default, self.pending = self.pending, ""
        while True:
            try:
                text = ps.prompt(">>> ", default=default)
            except KeyboardInterrupt:
                default = ""
                continue
            except EOFError:
                return None
            start = multiline_start(text)
            if start is None:
                return text
            first, closed = start
            if closed:
                return first
            lines = [first] if first else []
            try:
                while True:
                    line = ps.prompt("... ")
                    if line.rstrip().endswith(MULTILINE):
                        lines.append(line.rstrip()[:-len(MULTILINE)])
                        return "\n".join(lines).strip("\n")
                    lines.append(line)
            except (KeyboardInterrupt, EOFError):   # the block is dropped, the chat goes on
                default = ""
                continue

    def loop(self) -> None:
        eng = self.engine
        name = os.path.basename(eng.model.path)
        if eng.mtp:
            mode = f"MTP with {eng.k} mask tokens" if eng.kind != "plain" else "MTP off"
        else:
            mode = "plain decoding (this model has no MTP parts)"
        self.err.print(f"[dim]{name}: {mode}, {eng.ctx.n_threads} threads. /help for commands, Ctrl-D to leave.[/]")
        for n in self.notes:
            self.err.print(f"[dim]note: {n}[/]")
        ps = self._prompt_session()
        while True:
            text = self._read(ps)
            if text is None:
                return
            if not text.strip():
                continue
            if text.startswith("/"):
                if self.command(text.strip()) is False:
                    return
                continue
            self.answer(text)

    def command(self, line: str):
        cmd, _, arg = line.partition(" ")
        arg = arg.strip()
        s = self.session
        plain = self.engine.kind == "plain"
        try:
            if cmd in ("/exit", "/quit", "/bye"):
                return False
            if cmd == "/help":
                self.err.print(HELP, markup=False)
            elif cmd == "/clear":
                s.clear()
                self.err.print("[dim]conversation cleared[/]")
            elif cmd == "/system":
                s.system = arg or None
                s.clear()
                self.err.print("[dim]system prompt set; conversation cleared[/]")
            elif cmd == "/stats":
                self.err.print("last:    " + status_line(s.last, plain=plain, reference=s.total), markup=False)
                self.err.print("session: " + status_line(s.total, plain=plain), markup=False)
                if s.total.trees:
                    self.err.print("trees:   " + ", ".join(f"{tree_label(k)} x{v}" for k, v in s.total.trees.most_common()),
                                   markup=False)
                self.err.print(f"threads: {self.engine.ctx.n_threads}", markup=False)
            elif cmd == "/mtp" and arg in ("on", "off"):
                self.engine.set_mtp(arg == "on")
                if arg == "on":
                    self.engine.calibrate()
                self.err.print(f"[dim]MTP {arg}[/]")
            elif cmd == "/save" and arg:
                try:
                    s.save(arg)
                except OSError as e:   # the message, not the name of the temporary file behind it
                    raise ValueError(f"cannot save to {arg}: {e.strerror or e.__class__.__name__}") from None
                self.err.print(f"[dim]saved to {escape(arg)}[/]", highlight=False)
            elif cmd == "/load" and arg:
                s.load(arg)
                self.err.print(f"[dim]loaded {len(s.messages)} messages from {escape(arg)}[/]", highlight=False)
            else:
                self.error(f"unknown command or missing argument: {line} (/help)")
        except (ValueError, OSError) as e:
            self.error(str(e))
        return None

    def answer(self, text: str) -> None:
        from .binding import LlamaError
        from .cli import cut_off_note
        from .session import PromptTooLong

        s = self.session
        plain = self.engine.kind == "plain"
        # the plain steps measured before this answer: what its speedup is compared with
        before = Stats(plain_tokens=s.total.plain_tokens, plain_s=s.total.plain_s)
        view = AnswerView(self.console, markdown=self.markdown, show_drafts=self.show_drafts)
        tokens = s.ask(text)
        if self.governor is not None:
            tokens = self.governor.watch(tokens, lambda: s.last)
        stopped, problem = False, None

        def status(final: bool = False):
            return view.live(status_line(s.last, plain=plain, reference=before), final=final)

        with hold_typing(self._stdin_fd()) as held:
            try:
                first = next(tokens, None)    # prompt processing (and the check that it fits)
                if first is not None:
                    with Live(status(), console=self.console, auto_refresh=False, transient=False) as live:
                        try:
                            shown, tok = 0.0, first
                            while tok is not None:
                                view.add(tok.text, tok.source is not None)
                                done = view.finished()
                                if done is not None:
                                    live.console.print(done)
                                if time.perf_counter() - shown >= REFRESH_S:
                                    shown = time.perf_counter()
                                    live.update(status(), refresh=True)
                                tok = next(tokens, None)
                        finally:
                            tokens.close()   # the engine's statistics are final after this
                            live.update(status(final=True), refresh=True)   # ... and drawn once more
            except KeyboardInterrupt:
                stopped = True
            except (PromptTooLong, LlamaError, ValueError) as e:
                problem = e
            finally:
                tokens.close()
        self.pending = held[0] if held else ""
        if stopped:
            self.err.print("[dim](stopped)[/]")
        if problem is not None:
            self.error(str(problem))
        elif not stopped and s.last.truncated:
            self.err.print(f"[dim]{escape(cut_off_note(s.last, s))}[/]", highlight=False)
        if s.dropped:
            self.err.print(f"[dim]dropped {s.dropped} old turn(s) to fit the context[/]")

    @staticmethod
    def _stdin_fd() -> int:
        import sys

        try:
            return sys.stdin.fileno()
        except (AttributeError, OSError, ValueError):
            return -1
