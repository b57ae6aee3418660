"""The policy engine: which commands a line would run, and what the rules say.

Public API::

    compile_policy(settings: dict, rules: list[dict]) -> Policy      # raises ConfigError
    Policy.evaluate(principal, target, line, dialect="bash", *, interactive=False,
                    cwd=None) -> Decision                             # dialect: "bash" | "sh"
    Rule.interactive: bool        # the rule lets a program get raw terminal input
    bastion.policy.continuation.needs_more(text, dialect="bash") -> bool  # would a shell ask for more?
    Decision(action, rule, reason, command, commands).to_dict()
    Action.ALLOW / DENY / REVIEW

Modules: ``words`` (quote removal, escapes), ``parse`` (tree-sitter walk),
``wrappers`` (sudo, env, bash -c ...), ``commands`` (normalisation, opaque),
``patterns`` (rule patterns), ``effects`` (writes/reads/connects),
``programs`` (program tables), ``complete`` (needs_more), ``rules`` (validation, index), ``engine``
(decisions), ``danger`` (tables), ``selectors`` (who / targets), ``sanitize``.
The design, the semantics and the known limits are in docs/POLICY.md.

Pure package: no IO, no asyncio, no clock.
"""

from bastion.policy.engine import CommandDecision, Decision, Policy, compile_policy
from bastion.policy.rules import Action

__all__ = ["Action", "CommandDecision", "Decision", "Policy", "compile_policy"]
