INSERT INTO users (id, email) VALUES (1, 'ada@example.com'), (2, 'bob@example.com'), (3, 'cy@example.com');
SELECT setval(pg_get_serial_sequence('users', 'id'), 3);
INSERT INTO posts (id, user_id, title) VALUES (1, 1, 'hello'), (2, 2, 'world');
SELECT setval(pg_get_serial_sequence('posts', 'id'), 2);
