import psycopg


def test_local_pg_accepts_connections(local_pg):
    with psycopg.connect(local_pg.url()) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
