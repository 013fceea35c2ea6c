"""worker: a heartbeat in redis every two seconds (what a real worker's queue loop would be)."""

import time

import resp

if __name__ == "__main__":
    beats = 0
    while True:
        try:
            beats += 1
            resp.command("SET", "worker:beat", str(beats))
        except OSError:
            pass              # redis is still starting
        time.sleep(2)
