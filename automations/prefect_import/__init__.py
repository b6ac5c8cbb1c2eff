"""``runbell import prefect``: Prefect automation definitions → runbell YAML.

``importer`` (:func:`convert`, the mapping as a whole), ``triggers``, ``actions``,
``templates``, ``pattern_warnings``, ``yaml_io`` and ``common``. Depends on ``spec``
and ``core.matching`` only.
"""

from automations.prefect_import.importer import (
    ACTION_MAP,
    ImportResult,
    PrefectImportError,
    convert,
)

__all__ = ["ACTION_MAP", "ImportResult", "PrefectImportError", "convert"]
