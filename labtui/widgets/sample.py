"""The sample panel (`o`): text written by the selected run's latest checkpoint.

sessions.samples.sample_run draws it in a thread worker. It samples on the CPU whatever the
runs train on: that works wherever they train (a GPU, Ray workers on other machines), takes no
memory and no kernel time from the training device, and a few hundred characters of one sequence
take a second or two (the model's forward pass is small; generating is bound by latency).
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static
from textual.worker import Worker, WorkerState

SAMPLE_DEVICE = "cpu"  # see the module docstring
SAMPLE_TOKENS = 240  # characters: a few lines, drawn in a second or two on a CPU
CHECKPOINT = "latest"  # the newer of resume.pt and checkpoint.pt: runs still training too


class SamplePanel(ModalScreen[None]):
    """A sample of one run's text; `n` draws another (the next sampling seed)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,o", "close", "Close", id="sample_close"),
        Binding("n", "another", "Another sample", id="sample_another"),
    ]

    def __init__(self, session, run_id: str, tokens: int = SAMPLE_TOKENS) -> None:
        super().__init__()
        self.session = session
        self.run_id = run_id
        self.tokens = tokens
        self.seed = 0
        self.sample = None  # the last sessions.samples.Sample shown

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="sample"):
            yield Label(f"Sample of {self.run_id}", classes="dialog-title")
            yield Static("", id="sample-meta", classes="dim")
            with VerticalScroll(id="sample-scroll"):
                yield Static("", id="sample-text")
            yield Label("n another sample (next seed) · escape closes", classes="dim")

    def on_mount(self) -> None:
        self.draw()

    def draw(self) -> None:
        from sessions.samples import checkpoint_path

        if checkpoint_path(self.session, self.run_id, CHECKPOINT) is None:
            every = self.session.spec(self.run_id).checkpoint_interval
            when = f"every {every} steps and " if every else ""
            self._say(
                f"{self.run_id} has no checkpoint yet: a run saves one {when}when it is "
                "stopped or finishes. Press o again then.",
                "bold yellow",
            )
            return
        self._say(f"sampling {self.tokens} characters on the CPU (seed {self.seed})…", "dim")
        session, run_id, tokens, seed = self.session, self.run_id, self.tokens, self.seed
        self.run_worker(
            lambda: _sample(session, run_id, tokens, seed),
            name="sample",
            group="sample",
            thread=True,
            exclusive=True,
            exit_on_error=False,
        )

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "sample":
            return
        if event.state == WorkerState.SUCCESS:
            self.show(event.worker.result)
        elif event.state == WorkerState.ERROR:
            self._say(f"no sample: {event.worker.error}", "bold red")

    def show(self, sample) -> None:
        self.sample = sample
        where = "final" if sample.checkpoint == "checkpoint.pt" else "latest"
        self.query_one("#sample-meta", Static).display = True
        self.query_one("#sample-meta", Static).update(
            f"{sample.variant} · seed {sample.seed} · step {sample.step} ({where} checkpoint, "
            f"{sample.checkpoint}) · sampling seed {self.seed} · drawn on the CPU"
        )
        self.query_one("#sample-text", Static).update(Text(sample.prompt + sample.text))

    def _say(self, message: str, style: str) -> None:
        self.query_one("#sample-meta", Static).display = False
        self.query_one("#sample-text", Static).update(Text(message, style=style))

    def action_another(self) -> None:
        self.seed += 1
        self.draw()

    def action_close(self) -> None:
        self.dismiss(None)


def _sample(session, run_id: str, tokens: int, seed: int):
    from sessions.samples import SampleError, sample_run
    from sessions.store import SessionError

    try:
        return sample_run(
            session, run_id, tokens=tokens, seed=seed, checkpoint=CHECKPOINT, device=SAMPLE_DEVICE
        )
    except (SampleError, SessionError):
        raise  # one line already (a damaged checkpoint is named by sample_run)
    except Exception as err:  # anything else: one line in the panel, never a traceback
        raise SampleError(f"{type(err).__name__}: {err}".splitlines()[0]) from err
