"""Modal screens: the new-run form, and the confirmations of quitting and of switching sessions."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from core.spec import VARIANTS, RunSpec, SpecError


def parse_run(base: RunSpec, variant, seed: str, iters: str, lr: str) -> RunSpec:
    """The form's fields on top of ``base``; raises SpecError with a one-line reason."""
    if variant not in VARIANTS:
        raise SpecError("choose a variant")
    values = {}
    for name, text, kind in (("seed", seed, int), ("iters", iters, int), ("lr", lr, float)):
        try:
            values[name] = kind(text.strip())
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise SpecError(f"{name} must be {what}, got {text.strip()!r}") from None
    return base.replace(variant=variant, **values)


class NewRunForm(ModalScreen[RunSpec | None]):
    """Variant, seed, iterations and learning rate; errors are shown here, never raised."""

    AUTO_FOCUS = "#seed"  # enter adds the run at once (on the variant it would open its list)
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="form_cancel")
    ]

    def __init__(self, base: RunSpec, seed: int = 0) -> None:
        super().__init__()
        self.base = base
        self.seed = seed

    def compose(self) -> ComposeResult:
        with Vertical(id="form", classes="dialog"):
            yield Label("New run", classes="dialog-title")
            with Grid(id="form-grid"):
                yield Label("variant")
                yield Select(
                    [(v, v) for v in VARIANTS],
                    value=self.base.variant,
                    allow_blank=False,
                    id="variant",
                    compact=True,
                )
                yield Label("seed")
                yield Input(str(self.seed), id="seed", compact=True)
                yield Label("iterations")
                yield Input(str(self.base.iters), id="iters", compact=True)
                yield Label("learning rate")
                yield Input(f"{self.base.lr:g}", id="lr", compact=True)
            yield Label("", id="form-error")
            with Horizontal(classes="buttons"):
                yield Button("Add run", variant="primary", id="add", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    @on(Input.Submitted)
    @on(Button.Pressed, "#add")
    def submit(self) -> None:
        try:
            spec = parse_run(
                self.base,
                self.query_one("#variant", Select).value,
                self.query_one("#seed", Input).value,
                self.query_one("#iters", Input).value,
                self.query_one("#lr", Input).value,
            )
        except SpecError as err:
            self.query_one("#form-error", Label).update(f"✗ {err}")
            return
        self.dismiss(spec)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class Confirm(ModalScreen[bool]):
    """A question about the runs in training: y (the button in red) or n / escape (stay)."""

    def __init__(self, title: str, text: str, yes: str) -> None:
        super().__init__()
        self.title_text, self.text, self.yes = title, text, yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.text, id="confirm-text")
            with Horizontal(classes="buttons"):
                yield Button(f"{self.yes} (y)", variant="error", id="yes", compact=True)
                yield Button("Stay (n)", id="no", compact=True)

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class ConfirmQuit(Confirm):
    """Runs are training: cancel them (resumable) and quit, or stay."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Quit", id="quit_yes"),
        Binding("n,escape", "answer(False)", "Stay", id="quit_no"),
    ]

    def __init__(self, active: int) -> None:
        text = f"{active} run(s) training. They will be cancelled and saved, resumable with r."
        super().__init__("Quit labtui?", text, "Cancel runs and quit")


class ConfirmSwitch(Confirm):
    """Runs are training: cancel them (resumable) and open another session, or stay."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Switch", id="switch_yes"),
        Binding("n,escape", "answer(False)", "Stay", id="switch_no"),
    ]

    def __init__(self, current: str, other: str, active: int) -> None:
        text = (
            f"{active} run(s) of {current} are training. They will be cancelled and saved "
            f"(resumable with r when you open {current} again), then {other} opens."
        )
        super().__init__(f"Open session {other}?", text, "Cancel runs and switch")
