"""lowp.techniques (see docs/architecture.md). Importing the package registers its techniques, recipe families and
modifiers with ``lowp.recipes.extensions`` (the recipe layer loads it by name: ``extensions.PLUGINS``); the order
of registration is the order in which ``lowp.restore`` undoes them."""
from . import qat  # noqa: F401, I001  (each module registers itself)
from . import autosparse  # noqa: F401
from . import ktanh  # noqa: F401
