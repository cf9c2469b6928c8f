"""The interactive chat: prompt-toolkit for input, Rich for the streamed answer and its status."""
from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.markdown import Markdown
from rich.text import Text

from .stats import status_line

HELP = """commands:
  /help            this text
  /clear           forget the conversation (the system prompt stays)
  /system TEXT     set the system prompt (and clear)
  /stats           statistics of the last answer and of the session
  /mtp on|off      switch multi-token prediction
  /save FILE       save the conversation as JSON
  /load FILE       load a saved conversation
  /exit            leave (Ctrl-D too)
Enter sends; Alt-Enter (or Esc then Enter) starts a new line; Ctrl-C stops an answer."""


def data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "mtpchat"


class Repl:
    def __init__(self, session, *, markdown: bool = True, show_drafts: bool = False):
        self.session = session
        self.engine = session.engine
        self.markdown = markdown and not show_drafts
        self.show_drafts = show_drafts
        self.console = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)

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

    def loop(self) -> None:
        eng = self.engine
        name = os.path.basename(eng.model.path)
        if eng.mtp:
            mode = f"MTP with {eng.k} mask tokens" if eng.kind != "plain" else "MTP off"
        else:
            mode = "plain decoding (this model has no MTP parts)"
        self.err.print(f"[dim]{name}: {mode}. /help for commands, Ctrl-D to leave.[/]")
        ps = self._prompt_session()
        while True:
            try:
                text = ps.prompt(">>> ")
            except KeyboardInterrupt:
                continue
            except EOFError:
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
        try:
            if cmd in ("/exit", "/quit", "/bye"):
                return False
            if cmd == "/help":
                self.err.print(HELP)
            elif cmd == "/clear":
                s.clear()
                self.err.print("[dim]conversation cleared[/]")
            elif cmd == "/system":
                s.system = arg or None
                s.clear()
                self.err.print("[dim]system prompt set; conversation cleared[/]")
            elif cmd == "/stats":
                self.err.print("last:    " + status_line(s.last, plain=self.engine.kind == "plain"))
                self.err.print("session: " + status_line(s.total, plain=self.engine.kind == "plain"))
                if s.total.trees:
                    self.err.print("trees:   " + ", ".join(f"{k} x{v}" for k, v in s.total.trees.most_common()))
            elif cmd == "/mtp" and arg in ("on", "off"):
                self.engine.set_mtp(arg == "on")
                if arg == "on":
                    self.engine.calibrate()
                self.err.print(f"[dim]MTP {arg}[/]")
            elif cmd == "/save" and arg:
                s.save(arg)
                self.err.print(f"[dim]saved to {arg}[/]")
            elif cmd == "/load" and arg:
                s.load(arg)
                self.err.print(f"[dim]loaded {len(s.messages)} messages from {arg}[/]")
            else:
                self.err.print(f"[red]unknown command or missing argument: {line}[/] (/help)")
        except (ValueError, OSError) as e:
            self.err.print(f"[red]{e}[/]")
        return None

    def answer(self, text: str) -> None:
        s = self.session
        body = Text()
        chunks: list[str] = []

        def view():
            content = Markdown("".join(chunks)) if self.markdown else body
            return Group(content, Text(status_line(s.last, plain=self.engine.kind == "plain"), style="dim"))

        try:
            with Live(view(), console=self.console, refresh_per_second=12, transient=False) as live:
                for tok in s.ask(text):
                    chunks.append(tok.text)
                    body.append(tok.text, style="green" if (self.show_drafts and tok.source) else None)
                    live.update(view())
        except KeyboardInterrupt:
            self.err.print("[dim](stopped)[/]")
        except Exception as e:  # noqa: BLE001 - one bad answer must not end the session
            from .session import PromptTooLong
            from .binding import LlamaError

            if not isinstance(e, (PromptTooLong, LlamaError, ValueError)):
                raise
            self.err.print(f"[red]{e}[/]")
        if s.dropped:
            self.err.print(f"[dim]dropped {s.dropped} old turn(s) to fit the context[/]")
