# Conveniences over plain cargo (`cargo install just` brings `just`).

default:
    @just --list

# Run an experiment spec (default: the quick synthetic one).
run spec="experiments/quick.toml" *args="":
    cargo run --release -- run {{spec}} {{args}}

# The test suite, in release (unoptimized candle is 20-34x slower).
test:
    cargo test --release --workspace

# Every paper-style table.
reproduce *args="":
    cargo run --release -- reproduce {{args}}

# Throughput benchmarks.
bench *args="":
    cargo run --release -- bench {{args}}

lint:
    cargo fmt --all -- --check
    cargo clippy --release --workspace --all-targets -- -D warnings
