"""Identity: OIDC discovery, JWKS cache, token validation, claims → Principal.

This ``__init__`` stays light so the pure policy package can import
:mod:`bastion.identity.principal` without pulling in HTTP or JWT code.
"""
