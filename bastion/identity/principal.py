"""The Principal: who an agent or approver is, as mapped from validated claims.

Pure data; no IO.  Policy and grants match principals with selectors
(see :mod:`bastion.policy.selectors`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principal:
    subject: str                      # oid (Entra) or sub
    issuer: str = ""
    tenant: str = ""                  # tid
    app_id: str = ""                  # azp / appid
    name: str = ""                    # display name (name / preferred_username / app_displayname)
    roles: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    claims: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def label(self) -> str:
        """Short human label: ``name (subject)`` or just the subject."""
        return f"{self.name} ({self.subject})" if self.name else self.subject

    def as_dict(self) -> dict:
        return {
            "subject": self.subject, "issuer": self.issuer, "tenant": self.tenant,
            "app_id": self.app_id, "name": self.name,
            "roles": list(self.roles), "groups": list(self.groups),
        }

    @classmethod
    def from_claims(cls, claims: dict, *, subject_claim: str | None = None) -> "Principal":
        """Map (already validated) claims to a Principal.

        subject: ``subject_claim`` if given, else ``oid`` if present, else ``sub``.
        app id: ``azp`` or ``appid``.  name: ``name``, ``preferred_username`` or
        ``app_displayname``.  Raises ``KeyError`` naming a missing subject claim.
        """
        if subject_claim:
            subject = claims.get(subject_claim)
            if not subject:
                raise KeyError(subject_claim)
        else:
            subject = claims.get("oid") or claims.get("sub")
            if not subject:
                raise KeyError("oid/sub")

        def strs(value) -> tuple[str, ...]:
            if value is None:
                return ()
            if isinstance(value, str):
                return (value,)
            return tuple(str(v) for v in value)

        return cls(
            subject=str(subject),
            issuer=str(claims.get("iss", "")),
            tenant=str(claims.get("tid", "")),
            app_id=str(claims.get("azp") or claims.get("appid") or ""),
            name=str(claims.get("name") or claims.get("preferred_username")
                     or claims.get("app_displayname") or ""),
            roles=strs(claims.get("roles")),
            groups=strs(claims.get("groups")),
            claims=dict(claims),
        )
