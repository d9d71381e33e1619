"""Messages of the console: engine events carried from the training thread to the widgets,
and what the widgets tell the app. Named as things that happened.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from core import events as ev


@dataclass
class EngineEvent(Message):
    """An engine event from the training thread (RunStarted, StepLogged, EvalLogged...)."""

    event: object

    @property
    def run_id(self) -> str:
        return self.event.run_id


@dataclass
class RunStarted(EngineEvent):
    event: ev.RunStarted


@dataclass
class StepLogged(EngineEvent):
    event: ev.StepLogged


@dataclass
class EvalLogged(EngineEvent):
    event: ev.EvalLogged


@dataclass
class RunFinished(EngineEvent):
    event: ev.RunFinished


@dataclass
class QueueDrained(Message):
    """The training worker has nothing left to run (or was told to stop)."""


@dataclass
class RunSelected(Message):
    """The user moved the run queue's cursor to another run."""

    run_id: str

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunSelected)


WRAPPERS = {
    ev.RunStarted: RunStarted,
    ev.StepLogged: StepLogged,
    ev.EvalLogged: EvalLogged,
    ev.RunFinished: RunFinished,
}


def wrap(event: object) -> EngineEvent | None:
    """The message for an engine event, or None for events the screen does not show."""
    cls = WRAPPERS.get(type(event))
    return cls(event) if cls else None
