"""bastion: an SSH bastion for autonomous agents.

Agents log in with an OIDC access token, reach targets through ``ssh -J`` without
holding a target credential, and every command they run is decided by policy and
recorded.  docs/DATAPATH.md follows one command through it.
"""

__version__ = "0.1.0"
