"""Listeners: one module each, discovered at start-up; add a module to add a listener.

Any other `listeners/` directory on sys.path adds its modules too (pkgutil-style
namespace), so an app can keep its own listeners beside its code.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
