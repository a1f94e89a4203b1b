"""Service settings, from the environment (``KETAMINE_CDS_*``) with embedded defaults."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("ketamine_cds.service")


def private_dir(path: Path) -> None:
    """Make the folder readable by its owner only (0700). A folder that is already there is left as it is
    (it may be the operator's), with a warning when others may read it."""
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)
        path.chmod(0o700)  # mkdir's mode goes through the umask; this does not
    elif path.stat().st_mode & 0o077:
        log.warning("data folder %s may be read by other users (mode %o)", path, path.stat().st_mode & 0o777)


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("data")
    database_url: str | None = None  # postgresql://... ; None: SQLite in data_dir
    pseudonym_secret: bytes = b""  # HMAC key for patient pseudonyms; empty: made once and kept in data_dir
    trust_list: Path | None = None  # JSON list of trusted EHR issuers and their JWKS
    allow_unauthenticated: bool = False  # development only; announced loudly
    public_url: str = ""  # the service's own base URL, the JWT audience; default http://host:port
    fhir_timeout_s: float = 5.0  # all the reads of one hook call from its fhirServer together
    fhir_max_bytes: int = 16 * 1024 * 1024  # the most one hook call reads from its fhirServer, in all
    jwks_timeout_s: float = 3.0  # one fetch of an issuer's key set, from connecting to its last byte
    # The FHIR servers (base URL prefixes) the operator lists: the only ones read without an access token,
    # and, once any is listed, the only ones the service contacts at all. Empty: any https server that comes
    # with fhirAuthorization (CDS Hooks 2.0, FHIR Resource Access), and no open server.
    fhir_servers: tuple[str, ...] = ()
    site: Path | None = None  # a site protocol (TOML): checked at start, in force for every answer
    # the longest a CDS Client's JWT may live ('exp' - 'iat'), in seconds: its 'jti' is kept until it expires
    max_token_lifetime_s: int = 3600
    docs: bool = (
        False  # serve Swagger UI at /docs (from a CDN, under a Content-Security-Policy); off by default
    )

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "ketamine-cds.sqlite3"

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        env = os.environ
        values: dict[str, object] = {
            "host": env.get("KETAMINE_CDS_HOST", cls.host),
            "port": int(env.get("KETAMINE_CDS_PORT", cls.port)),
            "data_dir": Path(env.get("KETAMINE_CDS_DATA_DIR", str(cls.data_dir))),
            "database_url": env.get("KETAMINE_CDS_DATABASE_URL") or None,
            "pseudonym_secret": env.get("KETAMINE_CDS_PSEUDONYM_SECRET", "").encode(),
            "trust_list": Path(env["KETAMINE_CDS_TRUST_LIST"])
            if env.get("KETAMINE_CDS_TRUST_LIST")
            else None,
            "allow_unauthenticated": env.get("KETAMINE_CDS_ALLOW_UNAUTHENTICATED", "")
            in ("1", "true", "yes"),
            "public_url": env.get("KETAMINE_CDS_PUBLIC_URL", ""),
            "fhir_timeout_s": float(env.get("KETAMINE_CDS_FHIR_TIMEOUT_S", cls.fhir_timeout_s)),
            "fhir_max_bytes": int(env.get("KETAMINE_CDS_FHIR_MAX_BYTES", cls.fhir_max_bytes)),
            "jwks_timeout_s": float(env.get("KETAMINE_CDS_JWKS_TIMEOUT_S", cls.jwks_timeout_s)),
            "fhir_servers": tuple(env.get("KETAMINE_CDS_FHIR_SERVERS", "").split()),
            "site": Path(env["KETAMINE_CDS_SITE"]) if env.get("KETAMINE_CDS_SITE") else None,
            "docs": env.get("KETAMINE_CDS_DOCS", "") in ("1", "true", "yes"),
            "max_token_lifetime_s": int(
                env.get("KETAMINE_CDS_MAX_TOKEN_LIFETIME_S", cls.max_token_lifetime_s)
            ),
        }
        values.update({k: v for k, v in overrides.items() if v is not None and v != ()})
        return cls(**values)  # type: ignore[arg-type]

    def prepared(self) -> Settings:
        """Create the data directory (private: 0700) and, if none was given, a persistent pseudonym secret
        in it."""
        private_dir(self.data_dir)
        if self.pseudonym_secret:
            return self
        key_file = self.data_dir / "pseudonym.key"
        if not key_file.exists():
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
        return Settings(**{**self.__dict__, "pseudonym_secret": key_file.read_text().strip().encode()})
