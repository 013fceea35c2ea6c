"""Where a workspace's commands run: a Docker container, or the host worktree (``none``)."""
