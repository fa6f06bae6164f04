//! The settlement contract on chain: deploy it (with the demo token, or for an existing
//! ERC-20), publish a round (approve the round's total, then `publish`), read rounds, and
//! claim (what a provider's wallet does; the tests and `fleetctl` use it).
//!
//! Rounds are published from the treasury key (`settlement.key_file`), a different account
//! from the anchor's, so that the two loops never race for a nonce. A round is stored
//! before it is published; publishing again after a crash finds it on chain (the contract
//! refuses a second `publish` of a round, `AlreadyPublished`) and records it instead.

use std::path::Path;

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;

use crate::anchor::evm::{load_signer, redact_urls};

alloy::sol! {
    /// The settlement contract's interface (`contracts/HeliostatSettlement.sol`).
    #[sol(rpc)]
    #[derive(Debug)]
    contract HeliostatSettlement {
        function publish(uint64 round, bytes32 root, uint256 total) external;
        function claim(uint64 round, address account, uint256 amount, bytes32[] calldata proof) external;
        function getRound(uint64 round) external view returns (bytes32 root, uint256 total, uint256 claimed);
        function isClaimed(uint64 round, address account) external view returns (bool);
        function token() external view returns (address);
        function controller() external view returns (address);
        event Published(uint64 indexed round, bytes32 root, uint256 total);
        event Claimed(uint64 indexed round, address indexed account, uint256 amount);
        error NotController();
        error AlreadyPublished(uint64 round);
        error EmptyRound();
        error UnknownRound(uint64 round);
        error AlreadyClaimed(uint64 round, address account);
        error BadProof();
        error TransferFailed();
    }
}

alloy::sol! {
    /// The ERC-20 calls settlement makes (`contracts/HeliostatCredit.sol` has them all).
    #[sol(rpc)]
    contract Erc20 {
        function mint(address to, uint256 value) external;
        function approve(address spender, uint256 value) external returns (bool);
        function transfer(address to, uint256 value) external returns (bool);
        function balanceOf(address owner) external view returns (uint256);
        function allowance(address owner, address spender) external view returns (uint256);
    }
}

/// The settlement contract's creation bytecode (hex), as `scripts/build-contract` compiled it.
pub const SETTLEMENT_BYTECODE_HEX: &str = include_str!("../../contracts/HeliostatSettlement.bin");
/// The demo credit token's creation bytecode (hex).
pub const CREDIT_BYTECODE_HEX: &str = include_str!("../../contracts/HeliostatCredit.bin");

/// How long a sent transaction may take to be mined before the call gives up (the round
/// is published again next time: the contract refuses a second publish of it).
const RECEIPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Why a settlement call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum SettlementError {
    /// The node could not be reached, or refused or reverted a call (the contract's error
    /// named where it gave one).
    #[error("RPC: {0}")]
    Rpc(String),
    /// The node is on another chain than configured.
    #[error("node is on chain {got}, config says {expected}")]
    WrongChain { expected: u64, got: u64 },
    /// The key file is missing or not a secp256k1 key.
    #[error("{0}")]
    Key(String),
    /// A transaction was mined and reverted.
    #[error("{what}: transaction {tx} reverted")]
    Reverted { what: String, tx: B256 },
    /// The contract holds another root for the round: the chain and the database disagree.
    #[error("round {round}: the contract holds root {on_chain}, the database {local}")]
    Conflict {
        round: u64,
        on_chain: B256,
        local: B256,
    },
    /// The treasury holds fewer tokens than the round pays out.
    #[error("the treasury {treasury} holds {held} token units; round {round} needs {needed}")]
    TreasuryShort {
        treasury: Address,
        round: u64,
        held: U256,
        needed: u64,
    },
    /// The network asks more per gas than the configured cap (`epochs.evm.max_fee_gwei`):
    /// nothing is sent; the round waits for a cheaper moment.
    #[error("the network asks {asked_gwei} gwei per gas, above the cap of {cap_gwei}")]
    FeeAboveCap { asked_gwei: u64, cap_gwei: u64 },
}

impl SettlementError {
    /// A short, stable name for counting.
    pub fn reason(&self) -> &'static str {
        match self {
            SettlementError::Rpc(_) => "rpc",
            SettlementError::WrongChain { .. } => "wrong_chain",
            SettlementError::Key(_) => "key",
            SettlementError::Reverted { .. } => "reverted",
            SettlementError::Conflict { .. } => "conflict",
            SettlementError::TreasuryShort { .. } => "treasury_short",
            SettlementError::FeeAboveCap { .. } => "fee_above_cap",
        }
    }
}

/// An RPC or contract error, its URLs cut and the contract's custom error named.
fn rpc_err(e: alloy::contract::Error) -> SettlementError {
    let named = e
        .as_decoded_interface_error::<HeliostatSettlement::HeliostatSettlementErrors>()
        .map(|d| format!("{d:?}"));
    let text = redact_urls(&e.to_string());
    SettlementError::Rpc(match named {
        Some(n) => format!("{n} ({text})"),
        None => text,
    })
}

fn transport_err(e: impl std::fmt::Display) -> SettlementError {
    SettlementError::Rpc(redact_urls(&e.to_string()))
}

/// What a mined transaction cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mined {
    /// Its hash.
    pub tx: B256,
    /// Its block.
    pub block: u64,
    /// Gas it used.
    pub gas: u64,
}

/// A connection to the chain with one key.
pub struct SettlementChain {
    provider: DynProvider,
    from: Address,
    contract: Address,
    /// The most a transaction may pay per gas, gwei.
    max_fee_gwei: u64,
}

impl SettlementChain {
    /// Connects to `rpc_url` with the key in `key_file`, for the settlement contract at
    /// `contract`; checks the chain id when `chain_id` is given.
    pub async fn connect(
        rpc_url: &str,
        key_file: &Path,
        contract: Address,
        chain_id: Option<u64>,
    ) -> Result<SettlementChain, SettlementError> {
        let signer = load_signer(key_file).map_err(|e| SettlementError::Key(e.to_string()))?;
        let from = signer.address();
        let url = rpc_url.parse().map_err(|e| {
            SettlementError::Rpc(format!("bad RPC URL {}: {e}", redact_urls(rpc_url)))
        })?;
        // Nonces are asked of the node for every transaction: a cached nonce is taken even
        // by a call that then reverts in its gas estimate, and the next transaction would
        // wait forever behind the gap.
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .fetch_chain_id()
            .wallet(EthereumWallet::from(signer))
            .connect_http(url)
            .erased();
        if let Some(expected) = chain_id {
            let got = provider.get_chain_id().await.map_err(transport_err)?;
            if got != expected {
                return Err(SettlementError::WrongChain { expected, got });
            }
        }
        Ok(SettlementChain {
            provider,
            from,
            contract,
            max_fee_gwei: u64::MAX,
        })
    }

    /// The same connection, refusing to send while the network asks more than `gwei` per
    /// gas (the anchor's cap, `epochs.evm.max_fee_gwei`).
    pub fn with_fee_cap(mut self, gwei: u64) -> SettlementChain {
        self.max_fee_gwei = gwei;
        self
    }

    /// Refuses while the network's fee is above the cap.
    async fn check_fee(&self) -> Result<(), SettlementError> {
        let fees = self
            .provider
            .estimate_eip1559_fees()
            .await
            .map_err(transport_err)?;
        let cap_wei = u128::from(self.max_fee_gwei).saturating_mul(1_000_000_000);
        if fees.max_fee_per_gas > cap_wei {
            return Err(SettlementError::FeeAboveCap {
                asked_gwei: u64::try_from(fees.max_fee_per_gas.div_ceil(1_000_000_000))
                    .unwrap_or(u64::MAX),
                cap_gwei: self.max_fee_gwei,
            });
        }
        Ok(())
    }

    /// The sender's address.
    pub fn from(&self) -> Address {
        self.from
    }

    fn settlement(&self) -> HeliostatSettlement::HeliostatSettlementInstance<DynProvider> {
        HeliostatSettlement::new(self.contract, self.provider.clone())
    }

    /// The token the contract pays in.
    pub async fn token(&self) -> Result<Address, SettlementError> {
        self.settlement().token().call().await.map_err(rpc_err)
    }

    /// A round as the contract holds it: (root, total, claimed); all zero when unknown.
    pub async fn round(&self, round: u64) -> Result<(B256, U256, U256), SettlementError> {
        let r = self
            .settlement()
            .getRound(round)
            .call()
            .await
            .map_err(rpc_err)?;
        Ok((r.root, r.total, r.claimed))
    }

    /// Whether `account` has claimed round `round`.
    pub async fn is_claimed(&self, round: u64, account: Address) -> Result<bool, SettlementError> {
        self.settlement()
            .isClaimed(round, account)
            .call()
            .await
            .map_err(rpc_err)
    }

    /// A token balance.
    pub async fn token_balance(&self, owner: Address) -> Result<U256, SettlementError> {
        let token = Erc20::new(self.token().await?, self.provider.clone());
        token.balanceOf(owner).call().await.map_err(rpc_err)
    }

    /// Publishes round `round` (its root and total), approving the contract for the total
    /// first. `Ok(None)` when the contract already holds this very root (a publish sent
    /// before a crash): nothing is sent. Returns the approval's and the publish's costs.
    pub async fn publish(
        &self,
        round: u64,
        root: B256,
        total: u64,
    ) -> Result<Option<(Option<Mined>, Mined)>, SettlementError> {
        let (on_chain, _, _) = self.round(round).await?;
        if on_chain == root {
            return Ok(None);
        }
        if on_chain != B256::ZERO {
            return Err(SettlementError::Conflict {
                round,
                on_chain,
                local: root,
            });
        }
        self.check_fee().await?;
        let token = Erc20::new(self.token().await?, self.provider.clone());
        let held = token.balanceOf(self.from).call().await.map_err(rpc_err)?;
        if held < U256::from(total) {
            return Err(SettlementError::TreasuryShort {
                treasury: self.from,
                round,
                held,
                needed: total,
            });
        }
        let allowed = token
            .allowance(self.from, self.contract)
            .call()
            .await
            .map_err(rpc_err)?;
        let mut approval = None;
        if allowed < U256::from(total) {
            let call = token.approve(self.contract, U256::from(total));
            let r = call
                .send()
                .await
                .map_err(rpc_err)?
                .with_timeout(Some(RECEIPT_TIMEOUT))
                .get_receipt()
                .await;
            approval = Some(mined(r, format!("approving round {round}"))?);
        }
        let settlement = self.settlement();
        let call = settlement.publish(round, root, U256::from(total));
        let r = call
            .send()
            .await
            .map_err(rpc_err)?
            .with_timeout(Some(RECEIPT_TIMEOUT))
            .get_receipt()
            .await;
        Ok(Some((
            approval,
            mined(r, format!("publishing round {round}"))?,
        )))
    }

    /// Claims `amount` for `account` in round `round` with `proof` (anyone may send it; the
    /// tokens go to `account`).
    pub async fn claim(
        &self,
        round: u64,
        account: Address,
        amount: u64,
        proof: Vec<B256>,
    ) -> Result<Mined, SettlementError> {
        let settlement = self.settlement();
        let call = settlement.claim(round, account, U256::from(amount), proof);
        let r = call
            .send()
            .await
            .map_err(rpc_err)?
            .with_timeout(Some(RECEIPT_TIMEOUT))
            .get_receipt()
            .await;
        mined(r, format!("claiming round {round} for {account}"))
    }

    /// Deploys the settlement contract from `key_file` for `token`, or first a new demo
    /// token (`HeliostatCredit`) minting `mint` units to the deployer. Returns the
    /// settlement contract, the token, and the gas each deployment used (token, settlement).
    pub async fn deploy(
        rpc_url: &str,
        key_file: &Path,
        token: Option<Address>,
        mint: u64,
    ) -> Result<(Address, Address, Option<u64>, u64), SettlementError> {
        let c = Self::connect(rpc_url, key_file, Address::ZERO, None).await?;
        let (token, token_gas) = match token {
            Some(t) => (t, None),
            None => {
                let (t, gas) = c.deploy_code(CREDIT_BYTECODE_HEX, &[]).await?;
                if mint > 0 {
                    let erc = Erc20::new(t, c.provider.clone());
                    let r = erc
                        .mint(c.from, U256::from(mint))
                        .send()
                        .await
                        .map_err(rpc_err)?
                        .with_timeout(Some(RECEIPT_TIMEOUT))
                        .get_receipt()
                        .await;
                    mined(r, "minting".into())?;
                }
                (t, Some(gas))
            }
        };
        let mut arg = [0u8; 32];
        arg[12..].copy_from_slice(token.as_slice());
        let (s, gas) = c.deploy_code(SETTLEMENT_BYTECODE_HEX, &arg).await?;
        Ok((s, token, token_gas, gas))
    }

    async fn deploy_code(&self, hex: &str, args: &[u8]) -> Result<(Address, u64), SettlementError> {
        let mut code = attest::hex::decode(hex.trim())
            .map_err(|e| SettlementError::Rpc(format!("bad committed bytecode: {e}")))?;
        code.extend_from_slice(args);
        let tx = TransactionRequest::default().with_deploy_code(code);
        let r = self
            .provider
            .send_transaction(tx)
            .await
            .map_err(transport_err)?
            .with_timeout(Some(RECEIPT_TIMEOUT))
            .get_receipt()
            .await
            .map_err(transport_err)?;
        if !r.status() {
            return Err(SettlementError::Reverted {
                what: "deploying".into(),
                tx: r.transaction_hash,
            });
        }
        let addr = r
            .contract_address
            .ok_or_else(|| SettlementError::Rpc("receipt has no contract address".into()))?;
        Ok((addr, r.gas_used))
    }
}

fn mined(
    r: Result<alloy::rpc::types::TransactionReceipt, alloy::providers::PendingTransactionError>,
    what: String,
) -> Result<Mined, SettlementError> {
    let r = r.map_err(transport_err)?;
    if !r.status() {
        return Err(SettlementError::Reverted {
            what,
            tx: r.transaction_hash,
        });
    }
    Ok(Mined {
        tx: r.transaction_hash,
        block: r.block_number.unwrap_or(0),
        gas: r.gas_used,
    })
}
