//! Gas of settlement on a real local EVM node (anvil): deploying the demo token and the
//! settlement contract, publishing rounds of 1 to 10,000 lines (an `approve` and a
//! `publish` each, whatever the line count: the contract stores a root and two numbers), and
//! claiming a round's first, last and middle lines (a claim hashes its proof, so it grows
//! with the proof's depth).
//!
//! Every line pays a fresh address, so every claim's transfer sets a token balance from
//! zero, as a provider's first payout does. The first claim of a round also sets the
//! round's `claimed` sum from zero; the later ones only add to it.
//!
//! `cargo run --release -p fleet-controller --example settlement_gas`

use alloy::primitives::{Address, keccak256};
use fleet_controller::settlement::chain::SettlementChain;
use fleet_controller::settlement::{Line, proof, root, verify};
use hil_tests::{ANVIL_KEYS_MORE, Anvil, TempDir};

/// Round sizes, in lines.
const SIZES: [usize; 5] = [1, 10, 100, 1_000, 10_000];

/// A claim measured: the line, its proof's depth, whether it was the round's first claim,
/// and its gas.
struct Claim {
    index: usize,
    depth: usize,
    first: bool,
    gas: u64,
}

/// Line `i` of round `round`: a fresh address and a distinct amount (1 to 2 credits).
fn line(round: u64, i: usize) -> Line {
    let seed = keccak256([round.to_be_bytes(), (i as u64).to_be_bytes()].concat());
    Line {
        address: Address::from_slice(&seed[12..]),
        amount: 1_000_000 + i as u64,
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn main() {
    let tmp = TempDir::new("settlement-gas");
    let anvil = Anvil::start();
    let treasury_key = Anvil::write_key(tmp.path(), "treasury.key", ANVIL_KEYS_MORE[0]);
    let claimant_key = Anvil::write_key(tmp.path(), "claimant.key", ANVIL_KEYS_MORE[1]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let supply: u64 = SIZES.iter().map(|n| *n as u64 * 2_000_000).sum();
    let (contract, _, token_gas, settlement_gas) = rt
        .block_on(SettlementChain::deploy(
            &anvil.url(),
            &treasury_key,
            None,
            supply,
        ))
        .unwrap();
    let treasury = rt
        .block_on(SettlementChain::connect(
            &anvil.url(),
            &treasury_key,
            contract,
            Some(31337),
        ))
        .unwrap();
    let claimant = rt
        .block_on(SettlementChain::connect(
            &anvil.url(),
            &claimant_key,
            contract,
            Some(31337),
        ))
        .unwrap();

    println!(
        "deploying HeliostatCredit (demo token): {} gas",
        thousands(token_gas.unwrap())
    );
    println!(
        "deploying HeliostatSettlement: {} gas",
        thousands(settlement_gas)
    );
    println!();
    println!(
        "| round | lines | approve | publish | approve + publish | claims: line (proof depth) gas |"
    );
    println!("|---|---|---|---|---|---|");
    let mut later: Vec<(usize, u64)> = Vec::new();
    for (n, size) in SIZES.iter().enumerate() {
        let round = n as u64 + 1;
        let lines: Vec<Line> = (0..*size).map(|i| line(round, i)).collect();
        let total: u64 = lines.iter().map(|l| l.amount).sum();
        let r = root(round, &lines).unwrap();
        let (approval, publish) = rt
            .block_on(treasury.publish(round, r, total))
            .unwrap()
            .expect("a new round is sent");
        let approve = approval.expect("a new round needs an allowance").gas;
        // Claimed in the order first, last, middle (each line once).
        let mut order = vec![0];
        for i in [size - 1, size / 2] {
            if !order.contains(&i) {
                order.push(i);
            }
        }
        let mut claims = Vec::new();
        for (k, i) in order.into_iter().enumerate() {
            let p = proof(round, &lines, i);
            assert!(verify(round, &lines[i], &p, r));
            let depth = p.len();
            let mined = rt
                .block_on(claimant.claim(round, lines[i].address, lines[i].amount, p))
                .unwrap();
            if k > 0 {
                later.push((depth, mined.gas));
            }
            claims.push(Claim {
                index: i,
                depth,
                first: k == 0,
                gas: mined.gas,
            });
        }
        let text: Vec<String> = claims
            .iter()
            .map(|c| {
                format!(
                    "{} ({}) {}{}",
                    c.index,
                    c.depth,
                    thousands(c.gas),
                    if c.first { " first" } else { "" }
                )
            })
            .collect();
        println!(
            "| {round} | {} | {} | {} | {} | {} |",
            thousands(*size as u64),
            thousands(approve),
            thousands(publish.gas),
            thousands(approve + publish.gas),
            text.join("; ")
        );
    }
    // Gas per proof element: a least-squares line through the later claims (same storage
    // writes each, only the depth differs).
    let m = later.len() as f64;
    let (sx, sy) = later
        .iter()
        .fold((0.0, 0.0), |(x, y), (d, g)| (x + *d as f64, y + *g as f64));
    let (mx, my) = (sx / m, sy / m);
    let (sxy, sxx) = later.iter().fold((0.0, 0.0), |(a, b), (d, g)| {
        let dx = *d as f64 - mx;
        (a + dx * (*g as f64 - my), b + dx * dx)
    });
    let slope = sxy / sxx;
    println!();
    println!(
        "later claims: about {} gas + {:.0} gas per proof element ({} claims)",
        thousands((my - slope * mx).round() as u64),
        slope,
        later.len()
    );
}
