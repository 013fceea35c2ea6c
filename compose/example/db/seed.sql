INSERT INTO greeting (id, message) VALUES (1, 'hello from the baseline');
