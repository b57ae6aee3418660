"""The upstream half of a mediated shell: the scripts the bastion runs on the host.

A mediated shell is two channels on the upstream connection (docs/INTERACTIVE.md):

* the **command channel** (exec, no pty) runs :func:`control_command`: it makes a private
  FIFO in a fresh ``mktemp -d`` directory, reports the directory and the shells it found on
  one line (``bastion-shell-ready DIR BASH SH``), opens the FIFO for writing (which waits for
  the reader), removes the directory, and then copies its stdin -- the bastion's decided
  commands, framed by :func:`frame` -- into the FIFO with ``cat``;
* the **terminal channel** (exec with the agent's pty) runs :func:`terminal_command`: a
  *non-interactive* shell whose fd 3 is that FIFO, running :data:`LOOP`.  It never reads the
  terminal: it reads a frame from fd 3, runs it with ``eval`` (stdin the terminal, fd 3 and the
  marks' fd closed), and prints marks on the terminal around it.

Why this shape: type-ahead, keys left over by ``less`` or ``read -n``, a forged prompt or a
pasted payload can only ever reach a *program's* terminal input, never the shell's command
reader, because the shell does not read the terminal.  A non-interactive shell has no prompt-
time machinery at all (PS0/PS1/PS2/PROMPT_COMMAND/MAILPATH/history expansion/readline), so
nothing can be planted there.  ^C interrupts the running command: the loop's INT trap returns
from the function the command runs in (this also ends a loop of builtins), and the loop goes on.

Marks are OSC sequences carrying a per-session nonce, written to a saved copy of the terminal:
``ESC ] 6973 ; NONCE ; C BEL`` when a command starts and ``ESC ] 6973 ; NONCE ; P ; STATUS ;
CWD BEL`` at each prompt (STATUS empty before the first command).  After its C mark (and the
syntax check) the loop reads one more line from fd 3, the bastion's answer to that mark
(:func:`start_word`): ``0`` runs the command, ``130``/``131`` (a ^C or ^\\ the agent typed
before the command started) ends it with that status without running it.  After a command that the agent typed into, the bastion sends :data:`SYNC_FRAME`; the shell
reads what is left unread on its terminal (bash only; dash cannot read with a timeout) and
answers ``ESC ] 6973 ; NONCE ; T ; HEX BEL``, which the bastion puts in front of the next
command line: type-ahead becomes the next line, as it would in a terminal.  For Tab on a path
the bastion sends :func:`list_frame` (``L``, then the directory on a line); the shell answers
``ESC ] 6973 ; NONCE ; L ; hh.hh. ... BEL``: the directory's names (a glob, no program), each
byte as two hex digits and a dot.  They are hints: a forged or
missing mark can only make the bastion think a command is still running (keys then go to the
terminal, which no shell reads) or over (the next decided command waits in the FIFO until the
shell reads it).  Pure: strings in, strings out.
"""

from __future__ import annotations

import secrets

MARK_CODE = "6973"               # OSC number of the marks; any unused number would do
READY = "bastion-shell-ready"
FAIL_STATUS = 97                 # the command channel could not make its FIFO
SHELLS = ("bash", "sh")

# The loop, in the common subset of bash (run with --posix) and dash.  It must stay correct
# whatever the decided commands do to the shell's state, because it runs in the same shell:
#  * POSIX mode: a function cannot be named like a special builtin (unset, eval, exec, return,
#    trap, break, :) nor hold a '/', so those are the real builtins here; before each frame the
#    loop removes any function shadowing the regular builtins it calls (read, printf,
#    command) and defines its own functions again;
#  * its control flow uses only keywords and special builtins (no `[`), its variables are set
#    before use, the ones that matter are read-only;
#  * right after each command, before it calls any command itself, the loop checks (bash) that
#    the shell is still in POSIX mode (SHELLOPTS, read-only): outside it (`set +o posix`,
#    `unset POSIXLY_CORRECT`) a function could shadow `unset`, `trap` or `:`, so the loop
#    ends the shell with an expansion error of a read-only unset variable (no command runs);
#  * a text with a syntax error is rejected by `sh -n` first (a syntax error inside eval would
#    end a POSIX shell); the text runs under `command eval`, so that an assignment to a
#    read-only variable fails the command instead of ending the shell (an expansion error,
#    `set -u` and `${x?}`, still ends it);
#  * INT and QUIT are ignored between commands (a late ^C for a command that has ended would
#    otherwise fail the `read` on the FIFO and end the loop); they are trapped from just
#    before the C mark: the trap `return`s inside a running command, and one that comes
#    before the command is entered (during the syntax check or the wait for the start word)
#    is kept and returns at once.  The bastion types a ^C only once it has seen the C mark;
#    one the agent typed before that is the start word instead (130/131), because a SIGINT
#    that reaches this shell before the command's process exists is run by bash only once
#    that process has ended (traps run between commands): `sleep 30` would run on.  (The
#    word is read in a loop: a trapped signal interrupts `read`, which dash then reports
#    like an end of file; the trap's __bastion_w tells the two apart.  A real end of input
#    runs the command, as before the word existed.  A command gets INT and QUIT at their
#    default again, as trapped signals are not inherited; an ignored one would be.)  The
#    state leaves 1 inside __bastion_go, before it returns: a ^C in the instant after it
#    returned would otherwise `return` outside any function, which ends the shell.
LOOP = r"""
__bastion_in=0 __bastion_s=0 __bastion_int=0 __bastion_ok=0 __bastion_g= __bastion_w=0
export LESSSECURE=1
PS4='+ '
unset BASH_ENV ENV
readonly PS4 BASH_ENV ENV LESSSECURE __bastion_code __bastion_nonce __bastion_self __bastion_check __bastion_lost
exec 4>&1
unset -f read printf command
printf '\033]%s;%s;P;;%s\007' "$__bastion_code" "$__bastion_nonce" "$PWD" >&4
while :; do
  trap '' INT QUIT
  unset -f read printf command
  __bastion_in=0 __bastion_int=0
  __bastion_st() { return "$1"; }
  __bastion_run() { __bastion_st "$__bastion_s"; command eval "$__bastion_cmd"; }
  __bastion_go() {
    __bastion_in=1
    case $__bastion_int in 0) ;; *) __bastion_in=3; return "$__bastion_int";; esac
    case $__bastion_ok in 0) ;; *) __bastion_in=3; return 2;; esac
    __bastion_run
    __bastion_rs=$?
    __bastion_in=3
    return "$__bastion_rs"
  }
  __bastion_drain() {
    __bastion_x= __bastion_h= __bastion_i=0
    case ${BASH_VERSION-} in ?*)
      IFS= read -r -s -d '' -n 4096 -t 0.01 __bastion_x
      while :; do
        case $((__bastion_i < ${#__bastion_x})) in 0) break;; esac
        LC_ALL=C printf -v __bastion_c %02x "'${__bastion_x:__bastion_i:1}"
        __bastion_h=$__bastion_h$__bastion_c
        __bastion_i=$((__bastion_i + 1))
      done;;
    esac
    printf '\033]%s;%s;T;%s\007' "$__bastion_code" "$__bastion_nonce" "$__bastion_h" >&4
  }
  __bastion_list() {
    __bastion_h=$(
      LC_ALL=C
      __bastion_i=0 __bastion_a=
      for __bastion_f in "$__bastion_d"/* "$__bastion_d"/.[!.]* "$__bastion_d"/..?*; do
        command test -e "$__bastion_f" || command test -L "$__bastion_f" || continue
        __bastion_i=$((__bastion_i + 1))
        case $__bastion_i in 257) break;; esac
        __bastion_r=${__bastion_f##*/}
        if command test -d "$__bastion_f"; then __bastion_r=$__bastion_r/; fi
        __bastion_r="$__bastion_r
"
        while :; do
          case $__bastion_r in '') break;; esac
          __bastion_t=${__bastion_r#?}
          __bastion_c=${__bastion_r%"$__bastion_t"}
          __bastion_a=$__bastion_a$(command printf '%02x.' "'$__bastion_c")
          __bastion_r=$__bastion_t
        done
        case $((${#__bastion_a} > 49152)) in 1) break;; esac
      done
      command printf '%s' "$__bastion_a"
    )
    printf '\033]%s;%s;L;%s\007' "$__bastion_code" "$__bastion_nonce" "$__bastion_h" >&4
  }
  __bastion_n=
  IFS= read -r __bastion_n <&3 || break
  case $__bastion_n in
    S) __bastion_drain; continue;;
    L) __bastion_d=; IFS= read -r __bastion_d <&3 || break; __bastion_list; continue;;
    ''|*[!0-9]*) break;;
  esac
  __bastion_cmd=
  while :; do
    case $__bastion_n in 0) break;; esac
    __bastion_l=
    IFS= read -r __bastion_l <&3 || exit 98
    __bastion_cmd="$__bastion_cmd$__bastion_l
"
    __bastion_n=$((__bastion_n - 1))
  done
  __bastion_in=2
  trap 'case $__bastion_in in 1) return 130;; 2) __bastion_int=130 __bastion_w=1;; esac' INT
  trap 'case $__bastion_in in 1) return 131;; 2) __bastion_int=131 __bastion_w=1;; esac' QUIT
  printf '\033]%s;%s;C\007' "$__bastion_code" "$__bastion_nonce" >&4
  __bastion_ok=0
  "$__bastion_self" $__bastion_check -n -c "$__bastion_cmd" 3<&- 4>&- || __bastion_ok=2
  __bastion_g=
  while :; do
    __bastion_w=0
    IFS= read -r __bastion_g <&3 && break
    case $__bastion_w in 0) __bastion_g=0; break;; esac
  done
  case $__bastion_g in 0) ;; 130|131) __bastion_int=$__bastion_g;; *) break;; esac
  __bastion_go 3<&- 4>&-
  __bastion_s=$?
  case ${BASH_VERSION-} in ?*) case :$SHELLOPTS: in *:posix:*) ;; *)
    __bastion_in=${__bastion_lost?bastion: the shell left POSIX mode; the session ends};;
  esac;; esac
  __bastion_in=0
  trap '' INT QUIT
  unset -f read printf command
  printf '\033]%s;%s;P;%s;%s\007' "$__bastion_code" "$__bastion_nonce" "$__bastion_s" "$PWD" >&4
done
exit "$__bastion_s"
"""


def start_word(status: int) -> bytes:
    """The bastion's answer to a C mark: ``0`` runs the command; 130 or 131 (^C or ^\\
    typed before it started) ends it with that status, unrun."""
    if status not in (0, 130, 131):
        raise ValueError(f"no start word for status {status}")
    return b"%d\n" % status


#: The frame that asks the shell for what is left unread on its terminal (a ``T`` mark answers).
SYNC_FRAME = b"S\n"


def list_frame(directory: str) -> bytes:
    """The frame that asks the shell for the names in ``directory`` (an ``L`` mark answers:
    at most 256 names, ``/`` after directories, each byte as ``hh.``)."""
    if "\n" in directory or "\x00" in directory:
        raise FrameError("a directory to list cannot hold a newline or NUL")
    return b"L\n" + directory.encode("utf-8", "surrogateescape") + b"\n"


def new_nonce() -> str:
    return secrets.token_hex(8)


def _sq(text: str) -> str:
    """``text`` as one single-quoted shell word (valid in every POSIX shell)."""
    return "'" + text.replace("'", "'\\''") + "'"


def control_command() -> str:
    """The command channel's command (run by the login shell of the target user)."""
    return ("umask 077; d=$(mktemp -d \"${TMPDIR:-/tmp}/bastion-shell.XXXXXXXX\") || exit 97; "
            "mkfifo \"$d/c\" || { rm -rf \"$d\"; exit 97; }; "
            f"printf '{READY} %s %s %s\\n' \"$d\" "
            "\"$(command -v bash || echo -)\" \"$(command -v sh || echo -)\"; "
            "exec 3>\"$d/c\"; rm -rf \"$d\"; exec cat >&3")


def parse_ready(line: str) -> tuple[str, dict[str, str]] | None:
    """``(fifo_dir, {"bash": path, "sh": path})`` from the command channel's first line."""
    parts = line.strip().split(" ")
    if len(parts) != 4 or parts[0] != READY or not parts[1].startswith("/"):
        return None
    shells = {name: path for name, path in zip(SHELLS, parts[2:], strict=True) if path.startswith("/")}
    return parts[1], shells


def terminal_command(fifo_dir: str, shell_path: str, nonce: str) -> str:
    """The terminal channel's command: the loop in ``shell_path``, fd 3 the FIFO."""
    bash = shell_path.endswith("/bash")
    flags = " --posix --noprofile --norc" if bash else ""
    script = (f"__bastion_code={MARK_CODE} __bastion_nonce={nonce} "
              f"__bastion_self={_sq(shell_path)} "
              f"__bastion_check={'--posix' if bash else ''};" + LOOP)
    return (f"exec {_sq(shell_path)}{flags} -c {_sq(script)} bastion-shell "
            f"3<{_sq(fifo_dir + '/c')}")


class FrameError(ValueError):
    """A command text that cannot be framed (NUL bytes)."""


def frame(command: str) -> bytes:
    """One decided command as the loop reads it: a line count, then the lines."""
    if "\x00" in command:
        raise FrameError("a command cannot hold a NUL character")
    lines = command.split("\n")
    return (f"{len(lines)}\n" + "\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
