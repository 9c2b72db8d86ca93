//! [`BleNodeBuilder`]: a BLE node from a name and what differs from the defaults.

use std::fmt;
use std::time::Duration;

use beets_core::node::{Hooks, SealConfig};
use beets_core::{FpeKey, Node, NodeConfig, Time, Transport};
use rand::TryRng;

use crate::sim::SimAir;
use crate::{BleConfig, BleNode, SpawnError};

/// A change to the engine settings, applied when the node is built.
type NodeConfigChange = Box<dyn FnOnce(&mut NodeConfig)>;

/// Builds a [`BleNode`]; from [`BleNode::builder`]. Defaults: Δt = 500 ms (paper §5), the
/// [`BleConfig`] defaults, an open space, no hooks, a seed from the OS. Then spawn it on the
/// simulated air ([`spawn_sim`](Self::spawn_sim)) or, with the `bluer` feature, on a BlueZ
/// adapter ([`spawn_bluez`](Self::spawn_bluez)).
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use beets_ble::{BleNode, SimAir, SimAirConfig};
/// let air = SimAir::new(SimAirConfig::default());
/// let beacon = BleNode::builder("beacon")
///     .delta_t(std::time::Duration::from_millis(300))
///     .spawn_sim(&air, [0xC0, 0, 0, 0, 0, 1])?;
/// beacon.handle().out(beets_core::tuple!("SENSOR", "LIGHT", 512)?, None).await?;
/// # Ok(()) }
/// ```
pub struct BleNodeBuilder {
    name: String,
    config: BleConfig,
    key: Option<FpeKey>,
    seal: Option<SealConfig>,
    hooks: Option<Box<dyn Hooks>>,
    seed: Option<u64>,
    tune: Vec<NodeConfigChange>,
}

impl fmt::Debug for BleNodeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BleNodeBuilder")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("keyed", &self.key.is_some())
            .field("sealed", &self.seal.is_some())
            .field("hooks", &self.hooks.is_some())
            .finish_non_exhaustive()
    }
}

impl BleNodeBuilder {
    pub(crate) fn new(name: &str) -> BleNodeBuilder {
        BleNodeBuilder {
            name: name.to_owned(),
            config: BleConfig::default(),
            key: None,
            seal: None,
            hooks: None,
            seed: None,
            tune: Vec::new(),
        }
    }

    /// How long each frame is advertised before the next replaces it (default 500 ms, the
    /// paper's Δt).
    pub fn delta_t(mut self, delta_t: Duration) -> Self {
        self.config.delta_t = delta_t;
        self
    }

    /// Every other BLE setting at once (queue, instances, interval, connectable, scanner).
    pub fn ble_config(mut self, config: BleConfig) -> Self {
        self.config = config;
        self
    }

    /// Keys the space with this password (FPE, spec §5: obfuscation, not authentication).
    pub fn key(mut self, password: &str) -> Self {
        self.key = Some(FpeKey::from_password(password));
        self.seal = None;
        self
    }

    /// Seals the space (spec §12): authenticated, replay-protected; a sealed BLE body is at
    /// most 20 bytes.
    pub fn seal(mut self, seal: SealConfig) -> Self {
        self.seal = Some(seal);
        self.key = None;
        self
    }

    /// Installs hooks (e.g. `AgentRuntime::hooks("ble-ts")` of `beets-agents`).
    pub fn hooks(mut self, hooks: impl Hooks + 'static) -> Self {
        self.hooks = Some(Box::new(hooks));
        self
    }

    /// A fixed seed (first frame sequence number, reply back-off) for reproducible tests;
    /// production nodes keep the default, a seed from the OS.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Changes engine settings beyond the builder's on the [`NodeConfig`].
    pub fn node_config(mut self, change: impl FnOnce(&mut NodeConfig) + 'static) -> Self {
        self.tune.push(Box::new(change));
        self
    }

    /// The node these settings make, and the BLE settings.
    fn build(self) -> Result<(String, Node, BleConfig), SpawnError> {
        let mut config =
            NodeConfig::new(Transport::Ble, &self.name).map_err(SpawnError::BadConfig)?;
        config.key = self.key;
        if let Some(seal) = self.seal {
            config = config.with_seal(seal);
        }
        for change in self.tune {
            change(&mut config);
        }
        let seed = match self.seed {
            Some(s) => s,
            None => rand::rngs::SysRng
                .try_next_u64()
                .map_err(|e| SpawnError::NoRandomness(e.to_string()))?,
        };
        let mut node = Node::new(config, seed, Time::ZERO);
        if let Some(hooks) = self.hooks {
            node.set_hooks(hooks);
        }
        Ok((self.name, node, self.config))
    }

    /// Starts the node on the simulated air at address `addr`.
    ///
    /// # Errors
    /// [`SpawnError::BadConfig`] for a name outside 1..=16 bytes, [`SpawnError::NoRuntime`]
    /// outside a tokio runtime, [`SpawnError::NoRandomness`] without a seed and OS randomness.
    pub fn spawn_sim(self, air: &SimAir, addr: [u8; 6]) -> Result<BleNode, SpawnError> {
        let (name, node, config) = self.build()?;
        air.try_spawn_node(&name, node, addr, &config)
    }

    /// Starts the node on a BlueZ adapter: advertising and scanning through `bluetoothd`.
    ///
    /// # Errors
    /// As [`bluez::spawn`](crate::bluez::spawn), and the builder's errors as
    /// [`BluezError::Spawn`](crate::bluez::BluezError::Spawn).
    #[cfg(feature = "bluer")]
    pub async fn spawn_bluez(
        self,
        adapter: &bluer::Adapter,
    ) -> Result<BleNode, crate::bluez::BluezError> {
        let (name, node, config) = self.build()?;
        crate::bluez::spawn(&name, node, adapter, &config).await
    }
}
