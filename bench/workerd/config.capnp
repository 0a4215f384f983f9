# workerd's config for picloud-bench: one worker answering `hello`. The harness writes
# this file and hello.js into a temporary directory and starts
# `workerd serve config.capnp --socket-addr http=127.0.0.1:<port>`, so the address below
# is only a default. The compatibility date must not be later than the date of the
# pinned workerd release (package.json).
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [ (name = "hello", worker = .hello) ],
  sockets = [ (name = "http", address = "127.0.0.1:8787", http = (), service = "hello") ],
);

const hello :Workerd.Worker = (
  modules = [ (name = "hello.js", esModule = embed "hello.js") ],
  compatibilityDate = "2026-11-17",
);
