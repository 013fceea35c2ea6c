#!/usr/bin/env bash
# Entrypoint of sandbox/postgres: behaves like the official postgres image's entrypoint.
#
#   POSTGRES_PASSWORD         superuser password (required unless POSTGRES_HOST_AUTH_METHOD=trust)
#   POSTGRES_USER             superuser name (default: postgres)
#   POSTGRES_DB               database created at initialisation (default: $POSTGRES_USER)
#   POSTGRES_INITDB_ARGS      extra initdb arguments (word-split)
#   POSTGRES_HOST_AUTH_METHOD auth for host connections (default: scram-sha-256)
#   PGDATA                    data directory (default: /var/lib/postgresql/data)
#   VAR_FILE                  read VAR from a file instead (Docker secrets), for the POSTGRES_* above
#
# An empty PGDATA is initialised (initdb, pg_hba, listen on '*', POSTGRES_DB, then the files in
# /docker-entrypoint-initdb.d: *.sh, *.sql, *.sql.gz). A PGDATA that already holds a cluster is
# started as it is: sandbox's snapshot strategy starts clusters on cloned data directories, so
# files owned by another uid are chowned to postgres and a stale postmaster.pid is removed.
# Arguments starting with '-' (e.g. `-c fsync=off`) are passed through to postgres.
#
# `supervise postgres ARGS...` (sandbox's workspace clusters) keeps the container alive across a
# swap of its data directory, so that `sandbox db reset` does not recreate the container:
#   SIGUSR1          stop postgres at once (immediate shutdown), then start it again as soon as
#                    $SANDBOX_HOLD (default /sandbox/.hold) does not exist. sandbox creates the
#                    hold file, signals, waits for postmaster.pid to vanish, swaps the data
#                    directory's volume on the host and removes the hold file.
#   $SANDBOX_CTL     optional FIFO: each line written to it acts as a SIGUSR1.
#   SIGINT, SIGTERM  forwarded to postgres (fast / smart shutdown); the container then exits.
# If postgres exits on its own the container exits with its status, as without `supervise`.
set -Eeuo pipefail

log() { printf '%s [entrypoint] %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$*"; }
die() { log "error: $*" >&2; exit 1; }

# file_env VAR [DEFAULT]: VAR from the environment, or from the file named by VAR_FILE.
file_env() {
    local var=$1 file_var="${1}_FILE" def=${2:-}
    local val=$def
    if [[ -n ${!var:-} && -n ${!file_var:-} ]]; then
        die "both $var and $file_var are set (but are exclusive)"
    fi
    if [[ -n ${!var:-} ]]; then
        val=${!var}
    elif [[ -n ${!file_var:-} ]]; then
        val=$(<"${!file_var}")
    fi
    export "$var"="$val"
    unset "$file_var"
}

# True when postgres is asked only for help or its version (no initialisation then).
want_help() {
    local arg
    for arg; do
        case "$arg" in
            -'?'|--help|--describe-config|-V|--version) return 0 ;;
        esac
    done
    return 1
}

setup_env() {
    file_env POSTGRES_PASSWORD
    file_env POSTGRES_USER postgres
    file_env POSTGRES_DB "$POSTGRES_USER"
    file_env POSTGRES_INITDB_ARGS
    : "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
    export PGDATA=${PGDATA:-/var/lib/postgresql/data}
    DATABASE_ALREADY_EXISTS=
    if [[ -s $PGDATA/PG_VERSION ]]; then
        DATABASE_ALREADY_EXISTS=1
    fi
}

# As root: make PGDATA usable by postgres, whoever created it.
prepare_dirs_as_root() {
    mkdir -p "$PGDATA" /var/run/postgresql
    chmod 3777 /var/run/postgresql
    chown postgres:postgres /var/run/postgresql
    # Only files owned by someone else are touched: cheap on an already-correct cluster.
    find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
    chmod 0700 "$PGDATA"
}

remove_stale_pid() {
    # Nothing runs on this PGDATA in this fresh container yet: a postmaster.pid was copied along
    # with a snapshot, or left by a killed container.
    if [[ -f $PGDATA/postmaster.pid ]]; then
        log "removing stale $PGDATA/postmaster.pid"
        rm -f "$PGDATA/postmaster.pid"
    fi
    # The socket's lock names the PID of a postmaster that died with a killed container; in the
    # restarted container that PID can be alive (this script), and postgres would refuse to start.
    local lock
    for lock in /var/run/postgresql/.s.PGSQL.*.lock; do
        [[ -e $lock ]] || continue
        log "removing stale $lock"
        rm -f "$lock" "${lock%.lock}"
    done
}

init_cluster() {
    if [[ -z ${POSTGRES_PASSWORD:-} && $POSTGRES_HOST_AUTH_METHOD != trust ]]; then
        die "the database is uninitialized and POSTGRES_PASSWORD is not set; set it (or POSTGRES_PASSWORD_FILE), or POSTGRES_HOST_AUTH_METHOD=trust to allow connections without a password"
    fi
    mkdir -p "$PGDATA"
    chmod 0700 "$PGDATA" 2>/dev/null || true
    local pwfile
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
    local host_auth=$POSTGRES_HOST_AUTH_METHOD
    # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is word-split on purpose, as upstream does
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust \
        --auth-host="$host_auth" --encoding=UTF8 $POSTGRES_INITDB_ARGS
    rm -f "$pwfile"
    printf '\n# sandbox/postgres: connections from other containers and the host\nhost all all all %s\n' \
        "$host_auth" >>"$PGDATA/pg_hba.conf"
    printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
}

psql_init() {
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc "$@"
}

temp_server_start() {
    # Unix socket only: clients (and readiness probes) cannot connect before initialisation ends.
    PGUSER=$POSTGRES_USER pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -p 5432" start
}

temp_server_stop() {
    PGUSER=$POSTGRES_USER pg_ctl -D "$PGDATA" -m fast -w stop
}

create_database() {
    if [[ $POSTGRES_DB == postgres ]]; then
        return 0
    fi
    local exists
    exists=$(psql_init --dbname postgres --set db="$POSTGRES_DB" --tuples-only --no-align \
        <<<"SELECT 1 FROM pg_database WHERE datname = :'db';")
    if [[ -z $exists ]]; then
        psql_init --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
        log "created database $POSTGRES_DB"
    fi
}

run_init_files() {
    local f
    for f in /docker-entrypoint-initdb.d/*; do
        [[ -e $f ]] || continue
        case "$f" in
            *.sh)
                if [[ -x $f ]]; then log "running $f"; "$f"
                else log "sourcing $f"; # shellcheck disable=SC1090
                    . "$f"; fi ;;
            *.sql) log "running $f"; psql_init --dbname "$POSTGRES_DB" -f "$f" ;;
            *.sql.gz) log "running $f"; gunzip -c "$f" | psql_init --dbname "$POSTGRES_DB" ;;
            *) log "ignoring $f" ;;
        esac
    done
}

supervise() {
    local hold=${SANDBOX_HOLD:-/sandbox/.hold} pid= rc=0 restart= stop=
    # (a signal while postgres is down, held, only lets the hold decide: nothing to stop)
    trap '[[ -z $pid ]] || { restart=1; kill -QUIT "$pid" 2>/dev/null || true; }' USR1
    trap 'stop=INT; [[ -z $pid ]] || kill -INT "$pid" 2>/dev/null || true' INT
    trap 'stop=TERM; [[ -z $pid ]] || kill -TERM "$pid" 2>/dev/null || true' TERM
    # $SANDBOX_CTL (a FIFO sandbox made in the mount): a line written to it is a SIGUSR1, so the
    # host can ask for a restart without the Docker API.
    local ctl=${SANDBOX_CTL:-} line
    if [[ -n $ctl && -p $ctl ]]; then
        ( while :; do if read -r line <"$ctl"; then kill -USR1 $$ 2>/dev/null || exit 0; fi; done ) &
    fi
    while :; do
        while [[ -e $hold && -z $stop ]]; do sleep 0.005; done
        [[ -n $stop ]] && exit 0
        remove_stale_pid
        "$@" &
        pid=$!
        while :; do
            rc=0
            wait "$pid" || rc=$?
            kill -0 "$pid" 2>/dev/null || break     # `wait` returns early when a trapped signal arrives
        done
        pid=
        [[ -n $stop ]] && exit 0
        if [[ -n $restart ]]; then
            restart=
            continue
        fi
        exit "$rc"
    done
}

main() {
    if [[ ${1:-} == supervise ]]; then
        shift
        if [[ $(id -u) == 0 ]]; then
            setup_env
            prepare_dirs_as_root
            exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" supervise "$@"
        fi
        setup_env
        [[ -n $DATABASE_ALREADY_EXISTS ]] || die "supervise needs an initialised cluster in $PGDATA"
        unset POSTGRES_PASSWORD
        supervise "$@"
    fi
    if [[ ${1:-} == -* ]]; then
        set -- postgres "$@"
    fi
    if [[ ${1:-} == postgres ]] && ! want_help "$@"; then
        setup_env
        if [[ $(id -u) == 0 ]]; then
            prepare_dirs_as_root
            exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
        fi
        if [[ -z $DATABASE_ALREADY_EXISTS ]]; then
            init_cluster
            temp_server_start
            create_database
            run_init_files
            temp_server_stop
            log "PostgreSQL init process complete; ready for start up."
        else
            log "PostgreSQL database directory appears to contain a database; skipping initialization"
            remove_stale_pid
        fi
        unset POSTGRES_PASSWORD
        # Listen on every interface of the container, also for clusters created elsewhere;
        # a later `-c listen_addresses=...` argument still wins.
        set -- postgres -c "listen_addresses=*" "${@:2}"
    fi
    exec "$@"
}

main "$@"
