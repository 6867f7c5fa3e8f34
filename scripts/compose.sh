# Sourced: `compose` runs Compose v2 (`docker compose`) where it exists, else docker-compose v1.
compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose "$@"
    else
        docker-compose "$@"
    fi
}
