"""The per-request session: a lazy, change-tracking view of per-variable keys.

Costs, in store round trips: nothing until the session is used; one batch to
read the session record together with every variable the handler is known to
read; one batch at the end of the request with every change. Each variable is
its own key, so two requests that write different variables never undo each
other's work.

The server adopts only ids whose record (see ``record.py``) exists: a cookie
naming any other id starts a fresh session with a new id. What happens on the
server is ``Lifecycle``'s business (``lifecycle.py``); this module is the
mapping the application sees and the changes it makes.

Four of its parts live in modules of their own, as functions over a
``Session`` that use its underscore attributes: reading the server
(``loading.py``), writing to it (``saving.py``), atomic updates
(``atomic.py``) and moving to a new id (``transitions.regenerate``). A method
that is nothing but such a function (``regenerate_id``, ``set_expiry``,
``incr``, ``update_var``) is that function, bound in the class.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from . import atomic, expiry, loading, owners, revocation, saving, transitions
from . import flashes as flash_list
from .changes import NO_CHANGES, Changes
from .config import SessionConfig
from .keys import check_name
from .lifecycle import NEW, NO_CLIENT, STORED, UNLOADED, ClientInfo, Lifecycle
from .prefetch import NO_PREFETCH, Prefetch
from .stores import Item, Store
from .values import MISSING, serialize

if TYPE_CHECKING:
    from .durable import DurableTier

__all__ = ["ClientInfo", "Prefetch", "Session"]

log = logging.getLogger("webapp2_sessions")

_MISSING = MISSING
_UNCACHED: Any = object()  # not looked up yet
_NOTHING: frozenset[str] = frozenset()


class Session(MutableMapping[str, Any]):
    """One request's view of one session.

    Reads go through a per-request cache, so reading a name twice, or reading
    what this request wrote, costs nothing. Writes are kept until ``save()``,
    which the handler mixin calls at the end of dispatch. Values are captured
    when set: mutate a list you read, then set it again to store the change.
    """

    #: The request depended on the session (for Vary: Cookie).
    accessed = False
    _lost: frozenset[str] = frozenset()
    # The stored flash list as read (None: there is none; _MISSING: not read).
    _flash_item: Item | None = _MISSING

    def __init__(
        self,
        config: SessionConfig,
        store: Store,
        cookie_sid: str | None,
        *,
        cookie_present: bool = False,
        client: ClientInfo | None = None,
        prefetch: Prefetch | None = None,
        required: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        durable: DurableTier | None = None,
        quick: Iterable[str] = (),
    ) -> None:
        self.config = config
        self.store = store
        self.prefetch = prefetch or NO_PREFETCH
        self.required = frozenset(required) if required else _NOTHING
        #: The request carried a cookie of our name (valid or not).
        self.cookie_present = cookie_present
        self._server = Lifecycle(
            config,
            store,
            cookie_sid,
            client or NO_CLIENT,
            clock,
            weakref.ref(self),
            durable,
            frozenset(quick) if quick else _NOTHING,
        )
        #: Name -> decoded value (or MISSING), read or written this request.
        self._values: dict[str, Any] = {}
        #: Name -> the stored item a value was decoded from.
        self._items: dict[str, Item] = {}
        # Most requests only read: their changes stay the shared empty
        # NO_CHANGES until the first write makes them their own (_edit).
        self._changes = NO_CHANGES
        if cookie_present and not cookie_sid:
            self._server.cookie_action = "delete"  # a cookie we cannot use: clear it

    # ------------------------------------------------------------------ identity

    @property
    def session_id(self) -> str:
        """The id; a new visitor gets one that is stored on the first write."""
        self._ensure_loaded()
        server = self._server
        if server.sid is None:
            server.sid = server.fresh_id()
        return server.sid

    @property
    def is_new(self) -> bool:
        """True until something of this session is stored on the server."""
        self._ensure_loaded()
        return self._server.state is not STORED

    @property
    def stored(self) -> bool:
        """True once the session is known to exist on the server (never loads)."""
        return self._server.state is STORED

    @property
    def available(self) -> bool:
        """False once the store failed this request: reads gave defaults and
        writes are not being saved. Checks nothing by itself."""
        return not self._server.failed

    @property
    def lost(self) -> frozenset[str]:
        """Names the record lists whose value was gone (evicted or expired)."""
        return self._lost

    @property
    def cookie_action(self) -> str | None:
        """What the response must do with the cookie: None, 'set' or 'delete'."""
        return self._server.cookie_action

    @cookie_action.setter
    def cookie_action(self, action: str | None) -> None:
        self._server.cookie_action = action

    # ------------------------------------------------------------------ loading

    def load(self, *names: str) -> None:
        """Fetch the session and ``names`` (plus the handler's usual names) now.

        Later reads of those names cost nothing.
        """
        for name in names:
            check_name(name)
        self._ensure_loaded(names)
        if self._server.state is STORED:
            listed = self._server.record.names
            loading.fetch(self, [n for n in names if n not in self._values and n in listed])

    def start(self) -> None:
        """Load the session, and store it now if it is new (no variable needed)."""
        self._ensure_loaded()
        if self._server.state is NEW:
            self._edit().force = True
            self.save()

    def _ensure_loaded(self, extra: Iterable[str] = ()) -> None:
        self.accessed = True
        server = self._server
        if server.state is not UNLOADED:
            return
        loading.load(self, extra)

    def _forget_old(self) -> None:
        """After a fresh start: keep only what this request wrote (still pending)."""
        pending = self._changes.written.keys() | self._changes.deleted
        kept = {n: v for n, v in self._values.items() if n in pending}
        self._values.clear()
        self._values.update(kept)
        self._items.clear()
        self._flash_item = _MISSING

    # ------------------------------------------------------------------ reading

    def get(self, name: str, default: Any = None) -> Any:
        # A name read before (or written) in this request: no call at all.
        value = self._values.get(name, _UNCACHED) if name.__class__ is str else _UNCACHED
        if value is _UNCACHED:
            value = self._get(name)
        return default if value is _MISSING else value

    def _get(self, name: str) -> Any:
        # Cached: read before (so loaded and validated) or written by this request.
        value = self._values.get(name, _UNCACHED) if isinstance(name, str) else _UNCACHED
        if value is not _UNCACHED:
            return value
        if name.__class__ is not str or not name:
            check_name(name)
        prefetch = self.prefetch
        if prefetch.learn and name not in prefetch.current.names:  # new to it: learn it
            prefetch.note_read(name)
        self._ensure_loaded((name,))
        if name not in self._values:
            server = self._server
            if server.state is STORED and name in server.record.names:
                loading.fetch(self, [name])
            else:
                self._values[name] = _MISSING  # the record says it was never stored
        return self._values[name]

    def __getitem__(self, name: str) -> Any:
        value = self._get(name)
        if value is _MISSING:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(name) and self._get(name) is not _MISSING

    def _all_names(self) -> list[str]:
        self._ensure_loaded()
        names = set(self._server.record.names)
        names.update(n for n, v in self._values.items() if v is not _MISSING)
        if self._server.state is STORED:
            loading.fetch(self, sorted(n for n in names if n not in self._values))
        return sorted(n for n in names if self._values.get(n, _MISSING) is not _MISSING)

    def __iter__(self) -> Iterator[str]:
        return iter(self._all_names())

    def __len__(self) -> int:
        return len(self._all_names())

    # ------------------------------------------------------------------ writing

    def _edit(self) -> Changes:
        """This request's own changes, to add to."""
        changes = self._changes
        if changes is NO_CHANGES:
            changes = self._changes = Changes()
        return changes

    def __setitem__(self, name: str, value: Any) -> None:
        if name.__class__ is not str or not name:
            check_name(name)
        data = serialize(self.config, name, value)
        self.accessed = True
        self._values[name] = value
        changes = self._changes
        if changes is NO_CHANGES:
            changes = self._changes = Changes()
        changes.written[name] = data
        changes.deleted.discard(name)

    def __delitem__(self, name: str) -> None:
        if self._get(name) is _MISSING:
            raise KeyError(name)
        self.discard(name)

    def discard(self, name: str) -> None:
        """Delete ``name`` if present; unlike ``del``, never raises KeyError."""
        check_name(name)
        self.accessed = True
        self._values[name] = _MISSING
        changes = self._edit()
        changes.written.pop(name, None)
        changes.deleted.add(name)

    @property
    def modified(self) -> bool:
        return bool(self._changes)

    # ------------------------------------------------------------------ flashes

    def add_flash(self, value: Any, level: str | None = None) -> None:
        """Queue a message for a later request; written with the other changes."""
        line = flash_list.encode(serialize(self.config, "flash", [value, level]))
        self._edit().flashes.append(line)
        self.accessed = True

    def get_flashes(self) -> list[tuple[Any, str | None]]:
        """Every flash stored so far, oldest first; they are then cleared."""
        self.prefetch.note_flashes()
        self._ensure_loaded()
        server = self._server
        if self._flash_item is _MISSING:
            self._flash_item = loading.fetch_flashes(server)
        changes = self._edit()
        stored = self._flash_item
        if stored is not None:
            if changes.flashes_read:
                stored = None  # handed out by an earlier call in this request
            changes.flashes_read = True
        pending, changes.flashes = changes.flashes, []
        return flash_list.decode(stored, pending, self.config.serializer, server.sid or "")

    # ------------------------------------------------------------------ saving

    def save(self, on_sent: Callable[[str, bool], object] | None = None) -> None:
        """Write every change in one batch. Called at the end of dispatch.

        ``on_sent(session_id, sets_cookie)`` is called while the batch is in
        flight (see ``Store.execute``); ``sets_cookie`` tells whether the
        response will set the cookie if the batch succeeds. The handler mixin
        prepares the response's headers then.
        """
        changes = self._changes
        if changes is NO_CHANGES or not changes:
            return
        if self._server.state is STORED:  # loaded by a read before: the usual case
            saving.save_stored(self, on_sent)
        else:
            saving.save(self, on_sent)

    # ------------------------------------------------------------------ lifecycle
    # A method whose work is all done elsewhere is that function itself, bound
    # here without a call in between; its docstring is there.

    regenerate_id = transitions.regenerate

    def destroy(self) -> None:
        """Delete every key of the session on the server and expire the cookie."""
        self._ensure_loaded()
        self._changes.clear()
        transitions.destroy(self._server)

    def set_owner(self, owner: str) -> None:
        """Tie this session to ``owner`` (a user id, say): call it at login.

        Stores the session now if it is new. Raises ``TypeError`` unless
        ``owner`` is a ``str``, ``ValueError`` if it is empty. See ``owners.py``.
        """
        owner_hash = owners.owner_hash(owner)
        self.start()
        owners.tie(self._server, owner_hash)

    def destroy_others(self) -> int:
        """End every other session of this session's owner, as a logout does.

        Returns how many it ended; this session survives. 0 without an owner.
        """
        self._ensure_loaded()
        return revocation.end_others(self._server)

    set_expiry = expiry.set_expiry  # before the property below takes the name

    @property
    def expiry(self) -> int | None:
        """Seconds this session is remembered for (``set_expiry``), or None."""
        self._ensure_loaded()
        return self._server.record.expiry

    # ------------------------------------------------------------------ atomic updates

    # Bound as regenerate_id is: the functions of atomic.py.
    incr = atomic.incr
    update_var = atomic.update_var
