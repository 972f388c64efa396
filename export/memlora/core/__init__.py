"""What every layer shares and nothing heavy imports: ``config`` (typed export spec, enums,
per-backend blocks), ``errors``, ``artifact`` (the typed Artifact), ``manifest`` and ``bundle``
(manifest.json, atomic writing, file checks), ``families``, ``progress``, ``runner`` (the protocol)."""
