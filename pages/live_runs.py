"""Runs that outlive a browser session: a reload re-attaches to the page's running worker.

A reload starts a new Streamlit session whose state is empty, while the run the old session started
(a llc_core.execution BackgroundRun or Job) goes on in its worker. So every page that starts a worker
registers it here, in one registry per server process (st.cache_resource), under a random token that it
also writes to the URL (`?run=<token>`, beside the settings pages/common.py keeps there). A page loaded
with a token of a live run takes its workers back into the new session (`reattach`): its live panel polls
them again and Stop works. An unknown, expired or malformed token gets one short info message.

A token is the page's runs in one browser tab: the workers it started one after another (a sweep, then a
comparison) share it. It is `secrets.token_urlsafe` (144 random bits), checked for its length and
characters before it is looked up, and bound to its page. The registry holds at most MAX_ENTRIES tokens;
a worker leaves it when it has finished and its page has drawn the outcome (`collected`), or
KEEP_FINISHED_SECONDS after it finished (it was stopped, or it ended itself when nobody polled it, as a
closed tab's run does).
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from pages.common import RUN_PARAM, run_token_key

TOKEN_BYTES = 18  # secrets.token_urlsafe(18): 24 characters of A-Z a-z 0-9 - _
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{24}")
MAX_ENTRIES = 256
KEEP_FINISHED_SECONDS = 60.0


def ended_message(buttons: tuple[str, ...]) -> str:
    return (f"That run has ended or belongs to a restarted server; press {' or '.join(f'**{b}**' for b in buttons)} "
            "to start again.")


def valid_token(token: Any) -> bool:
    return isinstance(token, str) and TOKEN_PATTERN.fullmatch(token) is not None


@dataclass
class Slot:
    """One worker of a page (its BackgroundRun or Job: anything with `alive`), and what a session that
    re-attaches to it puts in its state."""

    worker: Any
    restore: Callable[[], dict[str, Any]]
    collected: bool = False
    finished_at: float | None = None


@dataclass
class Entry:
    page: str
    slots: dict[str, Slot] = field(default_factory=dict)


class RunRegistry:
    """token → the workers a page started in one tab; thread-safe (every session's script thread uses it)."""

    def __init__(self, max_entries: int = MAX_ENTRIES, keep_finished: float = KEEP_FINISHED_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.max_entries, self.keep_finished, self.clock = max_entries, keep_finished, clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, Entry] = OrderedDict()

    def add(self, page: str, token: str | None, slot: str, worker: Any,
            restore: Callable[[], dict[str, Any]]) -> str:
        """Register `worker` as `slot` of the page's runs under `token` (a new token when it is None,
        unknown or of another page); returns the token."""
        with self._lock:
            self._prune()
            entry = self._entries.get(token) if valid_token(token) else None
            if entry is None or entry.page != page:
                token = secrets.token_urlsafe(TOKEN_BYTES)
                while len(self._entries) >= self.max_entries:
                    self._entries.popitem(last=False)  # the oldest: its workers run on, only unreachable by URL
                entry = self._entries[token] = Entry(page)
            entry.slots[slot] = Slot(worker, restore)
            return token

    def find(self, page: str, token: Any) -> dict[str, Slot] | None:
        """The page's workers under `token`, or None for a malformed, unknown, expired or other page's token."""
        if not valid_token(token):
            return None
        with self._lock:
            self._prune()
            entry = self._entries.get(token)
            return dict(entry.slots) if entry is not None and entry.page == page else None

    def collected(self, token: Any, slot: str) -> None:
        """The page has drawn the finished outcome of `slot`: it may go once its worker has ended."""
        with self._lock:
            entry = self._entries.get(token) if valid_token(token) else None
            if entry is not None and slot in entry.slots:
                entry.slots[slot].collected = True
            self._prune()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _prune(self) -> None:
        now = self.clock()
        for token in list(self._entries):
            slots = self._entries[token].slots
            for name in list(slots):
                slot = slots[name]
                if slot.worker.alive:
                    continue
                if slot.finished_at is None:
                    slot.finished_at = now
                if slot.collected or now - slot.finished_at > self.keep_finished:
                    del slots[name]
            if not slots:
                del self._entries[token]


@st.cache_resource(show_spinner=False)
def registry() -> RunRegistry:
    """The server's one registry (shared by every session)."""
    return RunRegistry()


def register(page: str, slot: str, worker: Any, restore: Callable[[], dict[str, Any]]) -> str:
    """After a page starts `worker`: register it and put the token in this session's state and in the URL."""
    state = st.session_state
    token = registry().add(page, state.get(run_token_key(page)), slot, worker, restore)
    state[run_token_key(page)] = token
    if st.query_params.get(RUN_PARAM) != token:
        st.query_params[RUN_PARAM] = token
    return token


def reattach(page: str, buttons: tuple[str, ...] = ("Run",)) -> bool:
    """Early in the page: when the URL carries a run token this session does not hold yet (a reload, a new
    tab), take that token's live workers into this session's state (True); a token that leads nowhere gets
    one info message, and leaves the URL."""
    token = st.query_params.get(RUN_PARAM)
    state = st.session_state
    own = state.get(run_token_key(page))
    if token is None and own is not None and registry().find(page, own) is not None:
        st.query_params[RUN_PARAM] = own  # back on the page after another: its runs' token in the URL again
        return False
    if token is None or token == own:
        return False
    slots = registry().find(page, token)
    if slots is None:
        st.info(ended_message(buttons))
        del st.query_params[RUN_PARAM]
        return False
    for slot in slots.values():
        state.update(slot.restore())
    state[run_token_key(page)] = token
    return True


def collected(page: str, slot: str) -> None:
    """The page has drawn `slot`'s finished outcome in this session."""
    token = st.session_state.get(run_token_key(page))
    if token is not None:
        registry().collected(token, slot)


def kept(keys: tuple[str, ...]) -> dict[str, Any]:
    """This session's values of `keys` (those it has), for a `restore` to give a re-attached session."""
    return {k: st.session_state[k] for k in keys if k in st.session_state}
