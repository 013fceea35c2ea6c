"""The demo application: prints a small report from DATABASE_URL."""

import os

import psycopg


def main() -> None:
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        users = conn.execute("SELECT count(*) FROM users").fetchone()[0]
        posts = conn.execute("SELECT count(*) FROM posts").fetchone()[0]
        print(f"{users} users, {posts} posts")


if __name__ == "__main__":
    main()
