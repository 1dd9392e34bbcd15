//! The throughput/latency driver behind `cargo xtask peers`. Prints `RESULT {json}`
//! lines (the format of `shared/perf`).
//!
//! ```text
//! pool-bench tput  [N=100000] [WORKERS=2]   64 B echo, all submitted at once
//! pool-bench lat   [N=10000]                sequential round trips, 1 worker
//! pool-bench big   [N=1000]   [WORKERS=2]   1 MiB echo, all submitted at once
//! pool-bench cpu   [N=1000×WORKERS] [WORKERS=2]  CPU-bound tasks (`spin`, SPIN
//!                                           iterations each, default 1 000 000),
//!                                           all submitted at once: the rate, and
//!                                           its efficiency against WORKERS ×
//!                                           the same work timed in-process
//! pool-bench start [WORKERS=20]             start() until every worker is ready
//! pool-bench mem   [N=1000000]              RSS growth per queued 64 B task
//! pool-bench flat  [N=10000000]             RSS over a long run, sampled
//! pool-bench raw-lat [N=10000]              raw tokio pipe RTT to raw-echo (baseline)
//! pool-bench raw-tput [N=1000000]           raw pipelined 64 B, 2 children, 64 in flight
//! pool-bench raw-big [N=1000]               raw 1 MiB, 2 children, 8 in flight, 1 MiB pipes
//! pool-bench spawn [SECS=2]                 spawn-per-task (spawn raw-echo, echo, reap)
//! pool-bench frames [N=100000] [TYPE=echo]  writes hello, N 64 B TYPE tasks and a
//!                                           graceful shutdown to stdout (a worker's
//!                                           whole input, for `cargo xtask callgrind`)
//! ```
//! Environment: `CONC` tasks each worker runs at once (`worker_concurrency`;
//! default 64 for tput/big, 1 for lat; `CONC=1` is the pool's default),
//! `PREFETCH` tasks written to a worker beyond them at most (`prefetch`;
//! default the pool's, 512, as many as the worker gets through in 5 ms,
//! within `prefetch_bytes`, 1 MiB), `TRANSPORT` stdio|fifo (default stdio),
//! `TAG` a suffix for bench ids, `WORKER_CMD` a command line (split on
//! whitespace) that replaces the bundled `bench-worker` in `tput`,
//! `lat` and `big` (any worker with an `echo` handler that returns its
//! MessagePack payload, e.g. `python3 sdk/python/example_worker.py`); its
//! bench ids then read `ours.<WORKER_NAME>.tput` and so on (`WORKER_NAME`
//! defaults to `custom`).
//!
//! `CALLER=spawned` runs `tput`'s and `big`'s caller (submit all, then await
//! every handle) in a spawned task, on a runtime thread, instead of in the
//! runtime's `block_on` on the main thread (where `#[tokio::main]` runs a
//! program's `main`): each handle that is not ready yet then parks the main
//! thread, and a runtime thread must wake it. Use `TAG=spawned` with it to
//! keep the rows apart.
//!
//! `CALLER=completions` submits `tput`'s and `big`'s tasks with
//! `Pool::submit_each_to` and takes their outcomes from one `Completions`
//! channel in batches, instead of a handle a task (what `cortex-pool run` and
//! the daemon do). Use `TAG=completions` with it.
//!
//! `CALLERS=k` splits `tput`'s and `big`'s tasks between `k` callers, each a
//! spawned task that submits its share at once and awaits it (a server with
//! many clients rather than one loop). `THREAD_CPU=1` prints each thread's CPU
//! time after the measurement (`#` lines): which thread bounds the rate; and
//! how many of the machine's cores were busy (user, system) or idle, with its
//! context switches a second: whether the machine itself is the bound.
//! `QUEUE_SHARDS=n` splits the pool's queue in `n` shards (`PoolConfig::queue_shards`;
//! default 0, the pool's choice: one on a machine of 2 or 3 cores).
//!
//! `BIG_TASK` names the task type `big` sends (default `echo`, the typed
//! handler: a `ByteBuf` in and out, which the Rust SDK hands over without a
//! copy when it is large: the input is the buffer its frame was read into, the
//! output is written from its own buffer). `BIG_TASK=echo_raw TAG=raw` sends the
//! bundled worker's raw handler instead (the payload's bytes returned as they
//! arrived, as `raw-echo` does in `raw-big`): the pool and the pipe without the
//! handler's copies. `big` keeps the typed handler so its figures compare with
//! earlier ones and with the peers, whose workers decode too
//! (`docs/benchmarks.md`, "Large payloads: pipes and copies").

use std::io::{BufReader, BufWriter, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use benches::{
    config, echo, env_or, msgpack_bin, report_latency, result, rss_bytes, sibling, start_pool,
    start_pool_command, Link,
};
use pool_core::protocol::{encode_frame, TaskFrame, ToWorker, PROTOCOL_VERSION};
use pool_core::{Pool, Task, WorkerCommand};

const MIB: usize = 1 << 20;

fn id(base: &str) -> String {
    let mut s = base.to_owned();
    if worker_cmd().is_some() {
        let name = std::env::var("WORKER_NAME").unwrap_or_else(|_| "custom".into());
        if let Some(rest) = base.strip_prefix("ours.") {
            s = format!("ours.{name}.{rest}");
        }
    }
    let link = std::env::var("TRANSPORT").unwrap_or_default();
    if link == "fifo" {
        s.push_str(".fifo");
    }
    if let Ok(tag) = std::env::var("TAG") {
        if !tag.is_empty() {
            s.push('.');
            s.push_str(&tag);
        }
    }
    s
}

fn link() -> Link {
    Link::parse(&std::env::var("TRANSPORT").unwrap_or_else(|_| "stdio".into()))
        .expect("TRANSPORT must be stdio or fifo")
}

/// `WORKER_CMD` split on whitespace, when set and not empty.
fn worker_cmd() -> Option<Vec<String>> {
    let line = std::env::var("WORKER_CMD").ok()?;
    let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    (!words.is_empty()).then_some(words)
}

/// The worker of `tput`, `lat` and `big`: `WORKER_CMD`, or the bundled `bench-worker`.
fn echo_worker() -> WorkerCommand {
    match worker_cmd() {
        Some(words) => WorkerCommand::new(&words[0]).args(&words[1..]),
        None => WorkerCommand::new(sibling("bench-worker")),
    }
}

async fn pool(workers: usize, conc: u32) -> Pool {
    start_pool(link(), sibling("bench-worker"), config(workers, conc))
        .await
        .expect("pool starts")
}

async fn echo_pool(workers: usize, conc: u32) -> Pool {
    start_pool_command(link(), echo_worker(), config(workers, conc))
        .await
        .expect("pool starts")
}

/// The task type `big` sends: `BIG_TASK`, or `echo` (see the module doc).
fn big_task_type() -> String {
    std::env::var("BIG_TASK")
        .ok()
        .filter(|task_type| !task_type.is_empty())
        .unwrap_or_else(|| "echo".to_owned())
}

async fn run_all(pool: &Pool, payload: &bytes::Bytes, n: usize) -> usize {
    run_typed(pool, "echo", payload, n).await
}

/// Submits `n` tasks of `task_type` sharing `payload` at once and adds up the
/// lengths of the echoed payloads.
async fn run_typed(pool: &Pool, task_type: &str, payload: &bytes::Bytes, n: usize) -> usize {
    let handles = pool
        .submit_many((0..n).map(|_| Task::new(task_type, payload.clone())))
        .await
        .expect("submit");
    let mut bytes = 0;
    for h in handles {
        bytes += h.await.expect("echo").payload.len();
    }
    bytes
}

/// As [`run_typed`], through one [`Completions`](pool_core::Completions) channel instead of a handle a task.
async fn run_completions(pool: &Pool, task_type: &str, payload: &bytes::Bytes, n: usize) -> usize {
    let mut done = pool_core::Completions::new();
    let sink = done.sink();
    let accepted = pool
        .submit_each_to((0..n).map(|_| Task::new(task_type, payload.clone())), &sink)
        .await
        .into_iter()
        .filter(Result::is_ok)
        .count();
    assert_eq!(accepted, n, "every task accepted");
    let mut bytes = 0;
    let mut got = 0;
    let mut outcomes = Vec::with_capacity(1024);
    while got < n {
        outcomes.clear();
        got += done.recv_many(&mut outcomes, 1024).await;
        for outcome in outcomes.drain(..) {
            bytes += outcome.expect("echo").payload.len();
        }
    }
    bytes
}

async fn bulk(name: &str, task_type: &str, n: usize, workers: usize, size: usize) {
    let conc = env_or("CONC", 64u32);
    let pool = echo_pool(workers, conc).await;
    let payload = msgpack_bin(size);
    run_typed(&pool, task_type, &msgpack_bin(64), 200).await; // workers up and warm
    let cpu_before = thread_cpu();
    let machine_before = machine_cpu();
    let t = Instant::now();
    let callers = env_or("CALLERS", 1usize).max(1);
    let got = if std::env::var("CALLER").as_deref() == Ok("completions") {
        run_completions(&pool, task_type, &payload, n).await
    } else if callers > 1 || std::env::var("CALLER").as_deref() == Ok("spawned") {
        let spawned: Vec<_> = (0..callers)
            .map(|i| {
                let (caller, task_type, payload) =
                    (pool.clone(), task_type.to_owned(), payload.clone());
                let share = n / callers + usize::from(i < n % callers);
                tokio::spawn(async move { run_typed(&caller, &task_type, &payload, share).await })
            })
            .collect();
        let mut got = 0;
        for caller in spawned {
            got += caller.await.expect("join");
        }
        got
    } else {
        run_typed(&pool, task_type, &payload, n).await
    };
    let dt = t.elapsed().as_secs_f64();
    if std::env::var_os("THREAD_CPU").is_some() {
        print_thread_cpu(&cpu_before, dt);
        print_machine_cpu(machine_before, dt);
    }
    assert_eq!(got, n * payload.len(), "echo mismatch");
    result(&id(name), "rate", n as f64 / dt, "task/s");
    if size >= MIB {
        result(&id(name), "bw", (n * size) as f64 / dt / 1e9, "GB/s");
    }
    pool.shutdown().await;
}

/// The CPU time (user, system seconds) of each of this process's threads, by
/// thread id and name, from `/proc/self/task`.
fn thread_cpu() -> Vec<(String, f64, f64)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    // Clock ticks are 100 a second on Linux.
    let ticks = 100.0;
    let mut threads = Vec::new();
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let cpu = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // utime and stime: fields 14 and 15 of stat, 11 and 12 after the name.
        let name = format!(
            "{} {}",
            &stat[open + 1..close],
            task.file_name().to_string_lossy()
        );
        threads.push((name, cpu(11) / ticks, cpu(12) / ticks));
    }
    threads
}

/// The whole machine's CPU time since boot from `/proc/stat`, in seconds
/// (user with nice, system with interrupts, idle with I/O wait), and its
/// context switches.
fn machine_cpu() -> Option<[f64; 4]> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let mut machine = [0.0; 4];
    for line in stat.lines() {
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("cpu") => {
                let ticks: Vec<f64> = fields.filter_map(|v| v.parse().ok()).collect();
                let at = |i: usize| ticks.get(i).copied().unwrap_or(0.0) / 100.0;
                machine[0] = at(0) + at(1);
                machine[1] = at(2) + at(5) + at(6);
                machine[2] = at(3) + at(4);
            }
            Some("ctxt") => machine[3] = fields.next()?.parse().ok()?,
            _ => {}
        }
    }
    Some(machine)
}

/// Prints, as a `#` line, how many of the machine's cores were busy in user
/// and system mode and idle over the `wall` seconds since `before` (a
/// [`machine_cpu`] reading), and its context switches a second: whether the
/// machine itself was the bound.
fn print_machine_cpu(before: Option<[f64; 4]>, wall: f64) {
    let (Some(before), Some(after)) = (before, machine_cpu()) else {
        return;
    };
    let cores = |i: usize| (after[i] - before[i]) / wall;
    println!(
        "# machine: user {:.2} cores, system {:.2}, idle {:.2}; {:.0} context switches a second",
        cores(0),
        cores(1),
        cores(2),
        cores(3)
    );
}

/// Prints, as `#` lines, the CPU time each thread spent since `before` (a
/// [`thread_cpu`] reading) next to the `wall` seconds of the measurement:
/// which thread, if any, was busy all along.
fn print_thread_cpu(before: &[(String, f64, f64)], wall: f64) {
    for (name, user, system) in thread_cpu() {
        let (user0, system0) = before
            .iter()
            .find(|(n, ..)| *n == name)
            .map_or((0.0, 0.0), |(_, u, s)| (*u, *s));
        println!(
            "# thread {name}: user {:.2} s, system {:.2} s (wall {wall:.2} s)",
            user - user0,
            system - system0
        );
    }
}

/// `n` CPU-bound `spin` tasks on `workers` workers, all submitted at once:
/// the rate, and the efficiency against `workers` cores each running the same
/// work back to back in this process (1.0: the pool costs nothing).
async fn cpu(n: usize, workers: usize) {
    let iterations = env_or("SPIN", 1_000_000u64);
    // The ideal: one task's work, timed here (the fastest of a few runs).
    let one = (0..5)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(benches::spin(iterations));
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    let pool = echo_pool(workers, env_or("CONC", 1u32)).await;
    let payload = bytes::Bytes::from(rmp_serde::to_vec(&iterations).expect("encode"));
    run_typed(&pool, "spin", &payload, 2 * workers).await; // workers up and warm
    let t = Instant::now();
    run_typed(&pool, "spin", &payload, n).await;
    let rate = n as f64 / t.elapsed().as_secs_f64();
    result(&id("ours.cpu"), "rate", rate, "task/s");
    result(
        &id("ours.cpu"),
        "efficiency",
        rate * one / workers as f64,
        "ratio",
    );
    pool.shutdown().await;
}

/// Sequential round trips through the pool from a spawned task, as `raw_lat`
/// runs its own (a caller on a runtime thread, not in `block_on`).
async fn lat(n: usize) {
    let pool = echo_pool(1, env_or("CONC", 1u32)).await;
    let caller = pool.clone();
    let samples = tokio::spawn(async move {
        let payload = msgpack_bin(64);
        let mut samples = Vec::with_capacity(n);
        for i in 0..500 + n {
            let t = Instant::now();
            let out = caller.submit(echo(&payload)).await.expect("submit").await;
            let out = out.expect("echo");
            if i >= 500 {
                samples.push(t.elapsed().as_nanos() as u64);
            }
            assert_eq!(out.payload, payload);
        }
        samples
    })
    .await
    .expect("join");
    report_latency(&id("ours.lat"), samples);
    pool.shutdown().await;
}

async fn start(workers: usize) {
    let t = Instant::now();
    let pool = pool(workers, 1).await;
    let dt = t.elapsed();
    result(
        &id(&format!("ours.start.{workers}")),
        "ready",
        dt.as_secs_f64() * 1e3,
        "ms",
    );
    pool.shutdown().await;
}

/// RSS growth per queued task: one worker is kept busy by a `block` task, `n`
/// echo tasks of 64 B (each with its own payload buffer) wait in the queue; the
/// callers' handles are dropped (the tasks stay queued), so what remains is the
/// manager's own state per task plus the payload.
async fn mem(n: usize) {
    let pool = pool(1, 1).await;
    let blocker = pool
        .submit(Task::new("block", msgpack_bin(0)))
        .await
        .expect("submit");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let payloads: Vec<bytes::Bytes> = (0..n).map(|_| msgpack_bin(64)).collect();
    let payload_bytes: usize = payloads.iter().map(bytes::Bytes::len).sum();
    let before = rss_bytes();
    let mut it = payloads.into_iter();
    while it.len() > 0 {
        let chunk: Vec<Task> = it.by_ref().take(100_000).map(|p| echo(&p)).collect();
        drop(pool.submit_many(chunk).await.expect("submit"));
    }
    // Wait for the actor to take everything in: the blocker and the tasks in
    // the worker's prefetch window count as in flight, the rest as queued.
    while {
        let t = pool.metrics().tasks;
        t.queued + t.in_flight < n as u64 + 1
    } {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = rss_bytes();
    let per_task = (after.saturating_sub(before)) as f64 / n as f64;
    let payload = payload_bytes as f64 / n as f64;
    result(&id("ours.mem"), "rss_per_task", per_task, "B");
    result(
        &id("ours.mem"),
        "overhead_per_task",
        per_task - payload,
        "B",
    );
    blocker.cancel();
    drop(blocker);
    pool.shutdown().await;
}

/// RSS sampled every tenth of a long run (64 B echo, submitted in chunks).
async fn flat(n: usize) {
    let pool = pool(2, env_or("CONC", 64u32)).await;
    let payload = msgpack_bin(64);
    let chunk = 100_000.min(n);
    let mut samples = Vec::new();
    let t = Instant::now();
    let mut done = 0;
    while done < n {
        run_all(&pool, &payload, chunk).await;
        done += chunk;
        if done % (n / 10).max(chunk) == 0 {
            samples.push(rss_bytes());
        }
    }
    let dt = t.elapsed().as_secs_f64();
    let first = samples.first().copied().unwrap_or(0) as f64;
    let max = samples.iter().copied().max().unwrap_or(0) as f64;
    let last = samples.last().copied().unwrap_or(0) as f64;
    result(&id("ours.flat"), "rate", n as f64 / dt, "task/s");
    result(&id("ours.flat"), "rss_first", first / MIB as f64, "MiB");
    result(&id("ours.flat"), "rss_max", max / MIB as f64, "MiB");
    result(&id("ours.flat"), "rss_last", last / MIB as f64, "MiB");
    pool.shutdown().await;
}

fn frame(size: usize) -> Vec<u8> {
    let mut f = (size as u32).to_le_bytes().to_vec();
    f.extend((0..size).map(|i| (i % 251) as u8));
    f
}

fn spawn_raw() -> tokio::process::Child {
    tokio::process::Command::new(sibling("raw-echo"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn raw-echo")
}

/// Raw tokio pipe round trip (the limits crate's `tokio-mt`): a spawned task
/// writes one 64 B frame and reads the echo, `500 + n` times.
async fn raw_lat(n: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let samples = tokio::spawn(async move {
        let mut c = spawn_raw();
        let mut w = c.stdin.take().expect("stdin");
        let mut r = tokio::io::BufReader::new(c.stdout.take().expect("stdout"));
        let f = frame(64);
        let mut reply = vec![0u8; f.len()];
        let mut samples = Vec::with_capacity(n);
        for i in 0..500 + n {
            let t = Instant::now();
            w.write_all(&f).await.expect("write");
            r.read_exact(&mut reply).await.expect("read");
            if i >= 500 {
                samples.push(t.elapsed().as_nanos() as u64);
            }
        }
        assert_eq!(reply, f);
        drop(w);
        let _ = c.wait().await;
        samples
    })
    .await
    .expect("join");
    report_latency(&id("raw.lat"), samples);
}

/// Raw pipelined echo with std threads (the limits crate's `throughput`): per
/// child a writer keeps up to `window` frames in flight, a reader returns credits.
fn raw_throughput(children: usize, window: usize, size: usize, n: usize, pipe: bool) -> f64 {
    let mut procs = Vec::new();
    let mut readers = Vec::new();
    let start = Instant::now();
    for _ in 0..children {
        let mut c = Command::new(sibling("raw-echo"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn raw-echo");
        let w = c.stdin.take().expect("stdin");
        let r = c.stdout.take().expect("stdout");
        if pipe {
            grow_pipe(&w);
            grow_pipe(&r);
        }
        procs.push(c);
        let (credit_tx, credit_rx) = mpsc::channel::<()>();
        for _ in 0..window {
            credit_tx.send(()).expect("credit");
        }
        let writer = thread::spawn(move || {
            let f = frame(size);
            let mut w = BufWriter::with_capacity(64 * 1024, w);
            let mut sent = 0;
            while sent < n {
                credit_rx.recv().expect("credit");
                let mut k = 1;
                while k < n - sent && credit_rx.try_recv().is_ok() {
                    k += 1;
                }
                for _ in 0..k {
                    w.write_all(&f).expect("write");
                }
                w.flush().expect("flush");
                sent += k;
            }
            w
        });
        readers.push(thread::spawn(move || {
            let mut r = BufReader::with_capacity(256 * 1024, r);
            let mut hdr = [0u8; 4];
            let mut buf = vec![0u8; size];
            for _ in 0..n {
                r.read_exact(&mut hdr).expect("read");
                r.read_exact(&mut buf).expect("read");
                let _ = credit_tx.send(());
            }
            let end = Instant::now();
            drop(writer.join().expect("writer"));
            end
        }));
    }
    let mut end = start;
    for r in readers {
        end = end.max(r.join().expect("reader"));
    }
    for mut c in procs {
        let _ = c.wait();
    }
    (children * n) as f64 / (end - start).as_secs_f64()
}

/// Asks for a 1 MiB pipe, as `StdioTransport` does.
fn grow_pipe(fd: &impl std::os::fd::AsFd) {
    let _ = rustix::pipe::fcntl_setpipe_size(fd, MIB);
}

fn spawn_rate(secs: f64) -> f64 {
    let f = frame(64);
    let start = Instant::now();
    let mut count = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        let mut c = Command::new(sibling("raw-echo"))
            .arg("oneshot")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn raw-echo");
        c.stdin.take().expect("stdin").write_all(&f).expect("write");
        let mut out = Vec::with_capacity(f.len());
        c.stdout
            .take()
            .expect("stdout")
            .read_to_end(&mut out)
            .expect("read");
        assert!(c.wait().expect("wait").success());
        assert_eq!(out, f);
        count += 1;
    }
    count as f64 / start.elapsed().as_secs_f64()
}

/// A worker's whole input for `n` 64 B tasks of `task_type`, written to stdout:
/// hello (no heartbeats), the tasks, a graceful shutdown.
fn frames(n: usize, task_type: &str) {
    let max_frame = 1 << 20;
    let payload = msgpack_bin(64);
    let mut buf = bytes::BytesMut::new();
    let hello = ToWorker::Hello {
        version: PROTOCOL_VERSION,
        worker_id: "worker-1",
        heartbeat_ms: 0,
        max_frame: max_frame as u32,
    };
    encode_frame(&hello, &mut buf, max_frame).expect("encode hello");
    let mut out = std::io::stdout().lock();
    for id in 1..=n as u64 {
        let task = ToWorker::Task(TaskFrame {
            id,
            task_type,
            payload: &payload,
            attempt: 1,
            timeout_ms: 600_000,
        });
        encode_frame(&task, &mut buf, max_frame).expect("encode task");
        if buf.len() >= 64 * 1024 {
            out.write_all(&buf).expect("write frames");
            buf.clear();
        }
    }
    encode_frame(&ToWorker::Shutdown { graceful: true }, &mut buf, max_frame)
        .expect("encode shutdown");
    out.write_all(&buf).expect("write frames");
    out.flush().expect("flush frames");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let mode = args.first().map_or("tput", String::as_str);
    match mode {
        "raw-tput" => {
            let rate = raw_throughput(2, 64, 64, num(1, 1_000_000), false);
            return result(&id("raw.tput"), "rate", rate, "msg/s");
        }
        "raw-big" => {
            let rate = raw_throughput(2, 8, MIB, num(1, 1_000), true);
            result(&id("raw.big"), "rate", rate, "msg/s");
            return result(&id("raw.big"), "bw", rate * MIB as f64 / 1e9, "GB/s");
        }
        "frames" => return frames(num(1, 100_000), args.get(2).map_or("echo", String::as_str)),
        "spawn" => {
            let secs = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2.0);
            return result(&id("raw.spawn"), "rate", spawn_rate(secs), "task/s");
        }
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        match mode {
            "tput" => bulk("ours.tput", "echo", num(1, 100_000), num(2, 2), 64).await,
            "big" => bulk("ours.big", &big_task_type(), num(1, 1_000), num(2, 2), MIB).await,
            "cpu" => {
                let workers = num(2, 2);
                cpu(num(1, 1_000 * workers), workers).await;
            }
            "lat" => lat(num(1, 10_000)).await,
            "start" => start(num(1, 20)).await,
            "mem" => mem(num(1, 1_000_000)).await,
            "flat" => flat(num(1, 10_000_000)).await,
            "raw-lat" => raw_lat(num(1, 10_000)).await,
            other => {
                eprintln!("unknown mode {other}; see the doc comment of pool-bench");
                std::process::exit(2);
            }
        }
    });
}
