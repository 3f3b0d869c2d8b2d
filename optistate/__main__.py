"""``python -m optistate``: the same command as ``optistate``, also from the root of a source checkout.

There ``optistate`` is the source tree, which lacks ``optistate.migrations``
and ``optistate.plugins``: setup.cfg installs the top-level ``migrations/``
and ``plugins/`` into the package. So when the package sits in a checkout,
the checkout's root joins the package's path and they are found where they are.
"""

import os
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
package = sys.modules[__package__ or "optistate"]
if all(os.path.isfile(os.path.join(root, *p)) for p in (("setup.cfg",), ("migrations", "__init__.py"),
                                                          ("plugins", "__init__.py"))) and root not in package.__path__:
    package.__path__.append(root)

from .cli import main  # noqa: E402  (after the path is set: the plugins load from it)

raise SystemExit(main())
