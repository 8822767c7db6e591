"""Record the language servers this image has, so that no server start searches for them.

jupyter-lsp looks for ~20 kinds of language server (entry points, executables, node
modules) each time a single-user server starts: about 0.2 CPU-seconds of every spawn, paid
by every student of a class logging in at once (measured with bench/spawn.py). The image is
fixed once built, so the search runs here, once, and its result becomes configuration:
autodetection off, the servers it found listed. A user's own language server still works by
adding it to `LanguageServerManager.language_servers` in their jupyter_server_config.
"""

import json
import sys
from pathlib import Path

from jupyter_lsp.manager import LanguageServerManager

manager = LanguageServerManager()
manager.init_language_servers()
found = dict(manager.language_servers)
if not found:
    sys.exit("pin_language_servers: no language server found; refusing to turn autodetection off")
# The main config file, not a jupyter_server_config.d/ drop-in: the server reads those only
# for which extensions are enabled. A user's ~/.jupyter config still wins over this one.
target = Path(sys.prefix, "etc/jupyter/jupyter_server_config.json")
config = json.loads(target.read_text()) if target.exists() else {}
config["LanguageServerManager"] = {"autodetect": False, "language_servers": found}
target.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
print(f"pinned language servers: {', '.join(sorted(found))} -> {target}")
