"""The QuPath bridge: project reader, QuPath GeoJSON, backends (GeoJSON exchange | paquo).

Import from the submodules (``qupath_rkd.qupath.project``, ``.geojson``, ``.backends``);
nothing here starts a JVM or imports paquo.
"""

from __future__ import annotations
