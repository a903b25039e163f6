"""Sessions for webapp2 applications, one memcached key per variable."""

from .config import CookieArgs as CookieArgs
from .config import SessionConfig as SessionConfig
from .errors import ConfigurationError as ConfigurationError
from .errors import SessionError as SessionError
from .errors import SessionUnavailableError as SessionUnavailableError
from .errors import UpdateConflictError as UpdateConflictError
from .handler import SessionHandlerMixin as SessionHandlerMixin
from .memcache import MemcacheStore as MemcacheStore
from .middleware import SessionMiddleware as SessionMiddleware
from .middleware import get_current_session as get_current_session
from .revocation import revoke_sessions as revoke_sessions
from .serializers import JSONSerializer as JSONSerializer
from .serializers import PickleSerializer as PickleSerializer
from .serializers import Serializer as Serializer
from .session import Session as Session
from .stores import MemoryStore as MemoryStore
from .stores import Store as Store

__version__ = "0.2.0"
