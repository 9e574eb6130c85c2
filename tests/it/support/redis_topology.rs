//! Test-owned Redis deployments past one server: a 6-node Redis Cluster (3 masters, 3
//! replicas) and a master with a replica watched by 3 Sentinels. Every process is a real
//! `redis-server` on its own port and directory, killed on drop; a test kills a master to
//! make a failover real.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::env::free_port;
use super::redis_server::RedisServer;

/// How long a cluster or a failover may take to settle on a loaded machine.
const SETTLE: Duration = Duration::from_secs(60);
/// Sentinel's master name in these tests.
pub const MASTER_NAME: &str = "crtmaster";

fn connection(port: u16) -> Option<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .ok()?
        .get_connection_with_timeout(Duration::from_secs(1))
        .ok()
}

fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> Option<T> {
    cmd.query(&mut connection(port)?).ok()
}

fn wait_for(what: &str, mut done: impl FnMut() -> Result<(), String>) {
    let started = Instant::now();
    loop {
        match done() {
            Ok(()) => return,
            Err(why) if started.elapsed() > SETTLE => panic!("{what}: {why}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Six `redis-server --cluster-enabled yes`, joined by `redis-cli --cluster create`.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                // The bus port is chosen too: the default (port + 10000) may be taken or
                // past 65535.
                let bus = free_port().to_string();
                RedisServer::spawn_with(
                    free_port(),
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-port",
                        &bus,
                        "--cluster-config-file",
                        "nodes.conf",
                        // Fail over within about a second of a master's death.
                        "--cluster-node-timeout",
                        "1000",
                        "--cluster-replica-validity-factor",
                        "0",
                    ],
                )
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli is installed");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_settled();
        cluster
    }

    /// `REDIS_NODES` for the relay: every node, masters and replicas.
    pub fn nodes_var(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.answers())
            .map(RedisServer::port)
            .collect()
    }

    /// Waits until every live node says the cluster is ok and serves all slots.
    pub fn wait_settled(&self) {
        wait_for("the cluster settles", || {
            for port in self.live_ports() {
                let info: String = query(port, redis::cmd("CLUSTER").arg("INFO"))
                    .ok_or(format!("node {port} does not answer"))?;
                if !info.contains("cluster_state:ok") || !info.contains("cluster_slots_ok:16384") {
                    return Err(format!("node {port}: {info}"));
                }
            }
            Ok(())
        });
    }

    /// The port of the live master serving the slot of `key`, as a live node sees it.
    pub fn master_of(&self, key: &str) -> Option<u16> {
        let live = self.live_ports();
        let port = *live.first()?;
        let slot: u16 = query(port, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))?;
        let nodes: String = query(port, redis::cmd("CLUSTER").arg("NODES"))?;
        nodes.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.contains("master") || flags.contains("fail") {
                return None;
            }
            let serves = fields.iter().skip(8).any(|range| {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if (lo..=hi).contains(&slot))
            });
            let port: u16 = fields
                .get(1)?
                .split(['@', ','])
                .next()?
                .rsplit_once(':')?
                .1
                .parse()
                .ok()?;
            (serves && live.contains(&port)).then_some(port)
        })
    }

    /// SIGKILLs the node on `port` (a crash: its replica is promoted after the node time-out).
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .expect("a node of this cluster");
        node.stop();
    }

    /// Waits until a live master serves the slot of `key` again; returns its port.
    pub fn wait_failover(&self, key: &str, old: u16) -> u16 {
        let mut promoted = 0;
        wait_for("a replica takes over the slot", || {
            match self.master_of(key) {
                Some(p) if p != old => {
                    promoted = p;
                    Ok(())
                }
                other => Err(format!("master {other:?}")),
            }
        });
        self.wait_settled();
        promoted
    }
}

/// A master, its replica and three Sentinels (quorum 2) watching them.
pub struct RedisSentinels {
    pub master: RedisServer,
    pub replica: RedisServer,
    sentinels: Vec<(u16, Child, tempfile::TempDir)>,
}

impl RedisSentinels {
    pub fn start() -> RedisSentinels {
        let master = RedisServer::spawn_with(free_port(), &[]);
        let master_port = master.port().to_string();
        let replica =
            RedisServer::spawn_with(free_port(), &["--replicaof", "127.0.0.1", &master_port]);
        wait_for("the replica syncs", || {
            let info: String = query(replica.port(), redis::cmd("INFO").arg("replication"))
                .ok_or("replica does not answer")?;
            if info.contains("master_link_status:up") {
                Ok(())
            } else {
                Err(info)
            }
        });
        let sentinels = (0..3)
            .map(|_| Self::spawn_sentinel(master.port()))
            .collect();
        let set = RedisSentinels {
            master,
            replica,
            sentinels,
        };
        wait_for("the sentinels know each other and the replica", || {
            for port in set.sentinel_ports() {
                let ok: String = query(
                    port,
                    redis::cmd("SENTINEL").arg("CKQUORUM").arg(MASTER_NAME),
                )
                .ok_or(format!("sentinel {port}: no quorum yet"))?;
                let peers: Vec<redis::Value> = query(
                    port,
                    redis::cmd("SENTINEL").arg("SENTINELS").arg(MASTER_NAME),
                )
                .unwrap_or_default();
                let replicas: Vec<redis::Value> = query(
                    port,
                    redis::cmd("SENTINEL").arg("REPLICAS").arg(MASTER_NAME),
                )
                .unwrap_or_default();
                if !ok.starts_with("OK") || peers.len() < 2 || replicas.is_empty() {
                    return Err(format!(
                        "sentinel {port}: {ok}, {} peers, {} replicas",
                        peers.len(),
                        replicas.len()
                    ));
                }
            }
            Ok(())
        });
        set
    }

    fn spawn_sentinel(master_port: u16) -> (u16, Child, tempfile::TempDir) {
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("crt-sentinel-")
            .tempdir()
            .expect("temp dir");
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 3000\n",
                dir.path().display()
            ),
        )
        .expect("write sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        wait_for("a sentinel answers", || {
            query::<String>(port, &redis::cmd("PING"))
                .map(|_| ())
                .ok_or("no answer".into())
        });
        (port, child, dir)
    }

    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|(p, _, _)| *p).collect()
    }

    /// `REDIS_SENTINELS` for the relay.
    pub fn sentinels_var(&self) -> String {
        self.sentinel_ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The master's port as the sentinels name it (once all of them agree).
    pub fn named_master(&self) -> Option<u16> {
        let named: Vec<Option<u16>> = self
            .sentinel_ports()
            .iter()
            .map(|port| {
                let addr: Vec<String> = query(
                    *port,
                    redis::cmd("SENTINEL")
                        .arg("GET-MASTER-ADDR-BY-NAME")
                        .arg(MASTER_NAME),
                )?;
                addr.get(1)?.parse().ok()
            })
            .collect();
        named
            .first()
            .copied()
            .flatten()
            .filter(|first| named.iter().all(|n| *n == Some(*first)))
    }

    /// Waits until the sentinels name the replica as master and it says it is one.
    pub fn wait_failover(&self) {
        let promoted = self.replica.port();
        wait_for("the sentinels promote the replica", || {
            let role: Vec<redis::Value> =
                query(promoted, &redis::cmd("ROLE")).ok_or("replica does not answer")?;
            let is_master =
                matches!(role.first(), Some(redis::Value::BulkString(b)) if b == b"master");
            match (self.named_master(), is_master) {
                (Some(p), true) if p == promoted => Ok(()),
                other => Err(format!("(named master, replica is master) {other:?}")),
            }
        });
    }
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
