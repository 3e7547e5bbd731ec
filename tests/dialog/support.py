"""A scripted customer for the dialog tests: keeps the state and the clock between turns."""

from __future__ import annotations

from botd.dialog import DialogSettings, DialogState, Reply, Transition, Turn, render, step
from botd.dialog.texts import SUPPORTED_LOCALES

SETTINGS = DialogSettings()


def keys(transition: Transition) -> tuple[str, ...]:
    return tuple(reply.key for reply in transition.replies)


def params(reply: Reply) -> dict[str, str]:
    return dict(reply.params)


def render_everywhere(transition: Transition) -> list[str]:
    """Every reply rendered in every locale (the consumer supplies order_id)."""
    return [
        render(reply, locale, order_id="42")
        for reply in transition.replies
        for locale in SUPPORTED_LOCALES
    ]


class Chat:
    """One customer talking to the bot; each ``say`` is one turn, one second after the last."""

    def __init__(
        self,
        client_id: str = "client-1",
        settings: DialogSettings = SETTINGS,
        state: DialogState | None = None,
        now: float = 1_700_000_000.0,
    ) -> None:
        self.client_id = client_id
        self.settings = settings
        self.state = state
        self.now = now
        self.count = 0

    def turn(
        self,
        text: str | None = None,
        *,
        media: tuple[str, ...] = (),
        location: tuple[float, float] | None = None,
        contact_phone: str | None = None,
        locale_hint: str | None = None,
    ) -> Turn:
        self.count += 1
        return Turn(
            message_id=f"m{self.count}",
            client_id=self.client_id,
            text=text,
            at=self.now,
            media=media,
            location=location,
            contact_phone=contact_phone,
            locale_hint=locale_hint,
        )

    def say(
        self,
        text: str | None = None,
        *,
        after: float = 1.0,
        media: tuple[str, ...] = (),
        location: tuple[float, float] | None = None,
        contact_phone: str | None = None,
        locale_hint: str | None = None,
    ) -> Transition:
        self.now += after
        turn = self.turn(
            text,
            media=media,
            location=location,
            contact_phone=contact_phone,
            locale_hint=locale_hint,
        )
        transition = step(self.state, turn, self.now, self.settings)
        self.state = transition.state
        return transition

    def fill(self, *answers: str) -> Transition:
        """Say each answer in turn; return the last transition."""
        transition = None
        for answer in answers:
            transition = self.say(answer)
        assert transition is not None
        return transition


def at_confirmation(chat: Chat | None = None) -> Chat:
    """A chat that has answered every question and sees the summary."""
    chat = chat or Chat()
    chat.fill("привет", "Бишкек, ул. Токтогула 10, кв. 5", "0555 123 456", "3")
    return chat
