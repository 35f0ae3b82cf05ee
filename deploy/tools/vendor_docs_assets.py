"""Vendors the assets /docs and /redoc serve (Swagger UI, ReDoc) into services/api/static/docs/, so the API's
documentation works offline and never loads from a CDN. Packages come from the npm registry through `npm pack`,
pinned by version and by the registry's sha512 integrity; the copied files' SHA-256 go to SHA256SUMS, which
tests/api/test_openapi.py checks against what the API serves.

Run: python deploy/tools/vendor_docs_assets.py   (needs `npm`; only to change versions)."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

DEST = Path(__file__).resolve().parents[2] / "services" / "api" / "static" / "docs"
# package@version -> (sha512 integrity of the tarball, {file in the package: name under DEST})
PACKAGES = {
    "swagger-ui-dist@5.35.0": (
        "sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ==",
        {"package/swagger-ui-bundle.js": "swagger-ui-bundle.js", "package/swagger-ui.css": "swagger-ui.css",
         "package/favicon-32x32.png": "favicon-32x32.png", "package/LICENSE": "LICENSE.swagger-ui"},
    ),
    "redoc@2.5.4": (
        "sha512-M6jWhG1qoBnH6TFmzJnstyCZ87HmOY/UzDm78mHiYihEdlV/YcS9ogOo1NlElnJMeLsyxHFe2yFc4sNjHTrABQ==",
        {"package/bundles/redoc.standalone.js": "redoc.standalone.js", "package/LICENSE": "LICENSE.redoc"},
    ),
}


def main() -> int:
    DEST.mkdir(parents=True, exist_ok=True)
    sums = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec, (integrity, files) in PACKAGES.items():
            name = subprocess.run(["npm", "pack", spec, "--silent"], cwd=tmp, check=True, capture_output=True,
                                  text=True).stdout.strip().splitlines()[-1]
            tarball = Path(tmp, name).read_bytes()
            got = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
            if got != integrity:
                print(f"{spec}: integrity {got} differs from the pinned {integrity}", file=sys.stderr)
                return 1
            with tarfile.open(Path(tmp, name)) as tar:
                for member, target in files.items():
                    data = tar.extractfile(member).read()
                    (DEST / target).write_bytes(data)
                    sums.append(f"{hashlib.sha256(data).hexdigest()}  {target}")
            print(f"{spec}: {len(files)} files, tarball integrity verified")
    (DEST / "VERSIONS").write_text("".join(f"{spec} {integrity}\n" for spec, (integrity, _) in PACKAGES.items()))
    (DEST / "SHA256SUMS").write_text("\n".join(sorted(sums, key=lambda s: s.split()[1])) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
