"""sandbox's door to git: the only place where git runs, on the host or inside a container.

Layout
------
- :mod:`.runner`: the one runner. ``run(cwd, *args, trusted, input=, timeout=, env=, work_tree=)
  -> str`` raises :class:`GitFailed` (``args_run``, ``returncode``, ``stderr``; a
  ``WorkspaceError``) on a non-zero exit; ``call(...)`` with the same arguments (plus
  ``binary=True`` for bytes on stdout) returns the ``CompletedProcess`` whatever the exit code,
  for probes. One environment: ``LC_ALL=C``, ``GIT_TERMINAL_PROMPT=0``; ``trusted=False`` adds
  ``-c core.fsmonitor=false -c core.hooksPath=/dev/null`` (for anything that is not main's own
  repository and checkout). One deadline (``SANDBOX_GIT_TIMEOUT``, :func:`git_timeout`), after
  which git's whole process group is killed and :class:`GitTimedOut` (an ``UnsafeToTell``) is
  raised. :func:`version` for ``sandbox doctor``.
- :mod:`.main`: :class:`MainRepo`, main's repository and checkout (trusted), and
  :func:`find_project_root`. GitPython is used only here, only to read main's repository
  (:attr:`MainRepo.repo`). Batched reads for many workspaces:

  - ``MainRepo.branch_shas(branches=None) -> dict[str, str]``: every branch's commit, one
    ``git for-each-ref``;
  - ``MainRepo.ahead_behind(branches, base=None) -> dict[str, AheadBehind]``: each branch
    against main (``base``), ``AheadBehind(ahead, behind)``, in 3 git processes (4 when ``base``
    is omitted: main's branch is read) for any number
    of branches (git 2.39 has no ``%(ahead-behind)``).
- :mod:`.worktrees`: :class:`Worktrees` (a ``MainRepo``) adds the worktrees of ``runtime =
  "none"`` workspaces: ``registered``, ``head``, ``initializing``, ``add``, ``remove``, ``prune``,
  and ``find_unsaved(path, ignore) -> list[Unsaved]``.
- :mod:`.isolated`: :class:`IsolatedRepos`, Docker workspaces' own repositories, seen from main's
  side (the host never runs git inside them): ``add``, ``remove``, ``collect`` (``git fetch`` of
  their refs), ``collect_many(items) -> {name: error|None}`` (many at once: refs read from the
  files by :mod:`.refread`, mirrored with one ``update-ref`` when main has their objects, only the
  others fetched), ``check_repository``, ``find_unsaved(name, path, branch, ignore) ->
  list[Unsaved]``, ``export``, ``commit_file``, ``merge_commit``, ``show``, ``orphans``.
- :mod:`.unsaved`: :class:`Unsaved` (frozen: ``kind: UnsavedKind``, ``what`` the line to show,
  ``subject`` the path/commit/branch; ``to_json()``), ``UnsavedKind`` (CHANGES, UNTRACKED, STASH,
  DETACHED_COMMITS, OTHER_BRANCH; ``.uncommitted`` is True for the first two). Decide on kinds,
  never on the text.
- :mod:`.advance`: ``fast_forward_in(exec, name, branch, commit)``: ``api.advance``'s
  ``merge --ff-only`` for a Docker workspace, run inside its container through ``exec(argv,
  output) -> int`` (for example ``lambda argv, out: runtime.exec(spec, argv, output=out)``);
  ``fast_forward(path, name, commit)`` for a ``runtime = "none"`` worktree.
- :mod:`.files`: ``chown_tree``, ``copy_into`` (host file helpers for what git hands over).
- :mod:`.forecast`: what ``sandbox overview`` asks git, batched: ``verify_commits`` (one
  ``cat-file``), ``merge_pairs`` (every pair in one ``merge-tree --write-tree --stdin``),
  ``diffstats``, ``snapshot`` (a working tree as a throwaway commit, with sandbox's own index),
  ``grep_words`` and ``show_diff``.
- :mod:`.user`: ``sandbox git NAME -- ARGS``, a person's git command: ``in_container(exec, args)``
  inside a Docker workspace's container (through the runtime's exec), ``on_host(worktree, args)``
  hardened in a ``runtime = "none"`` worktree.
"""

from __future__ import annotations

from .advance import ExecFn, fast_forward, fast_forward_in
from .isolated import EMPTY_TREE, WS_REFS, IsolatedRepos
from .main import AheadBehind, MainRepo, find_project_root
from .runner import (
    LONG,
    GitFailed,
    GitTimedOut,
    call,
    failure,
    git_timeout,
    run,
    version,
)
from .unsaved import Unsaved, UnsavedKind
from .worktrees import INITIALIZING, Worktrees

__all__ = [
    "EMPTY_TREE", "INITIALIZING", "LONG", "WS_REFS", "AheadBehind", "ExecFn", "GitFailed", "GitTimedOut",
    "IsolatedRepos", "MainRepo", "Unsaved", "UnsavedKind", "Worktrees", "call", "failure", "fast_forward",
    "fast_forward_in", "find_project_root", "git_timeout", "run", "version",
]
