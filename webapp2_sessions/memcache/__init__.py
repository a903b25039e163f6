"""memcached as a session store: the wire codec and the store."""

from .meta import encode as encode
from .meta import exptime as exptime
from .meta import read_replies as read_replies
from .store import MemcacheStore as MemcacheStore
