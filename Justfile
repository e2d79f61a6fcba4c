# Every recipe is a thin alias: nothing here that `cargo xtask` (or plain cargo/docker) does not do too.

# List the recipes.
default:
    @just --list

# Run NATS, the publisher and two edges locally until Ctrl-C.
up:
    cargo xtask up

# Run the whole test suite against the pinned nats-server; extra args go to `cargo test`.
test *args:
    cargo xtask test {{args}}

# Format every crate.
fmt:
    cargo fmt --all

# Run the benchmarks (release build; every scenario unless args say otherwise, e.g. `--scenario unicast --quick`).
bench *args:
    cargo xtask bench {{args}}

# Lint every crate and target; warnings are errors.
lint:
    cargo clippy --workspace --all-targets --locked -- -D warnings

# Fail if any file is not formatted.
check-fmt:
    cargo fmt --all -- --check

# Regenerate proto-schemas/schemas/ from the Rust types.
schemas:
    cargo xtask schemas

# Ensure a nats-server >= 2.11 and print its path.
nats-server:
    cargo xtask nats-server

# Run the edge; args go to herald-edge (try `just edge --help`).
edge *args:
    cargo run -p herald-edge -- {{args}}

# Run the publisher; args go to herald-publisher (try `just publisher --help`).
publisher *args:
    cargo run -p herald-publisher -- {{args}}

# Build the image and start NATS, the publisher, two edges and the proxy in containers.
compose-up:
    docker compose up --build

# Stop the containers (add -v by hand to delete the NATS volume).
down:
    docker compose down
