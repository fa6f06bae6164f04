//! The SQLite schema, as versioned migrations: migration `i` takes the database from
//! `user_version` `i` to `i + 1`, in one transaction.

use super::StoreError;
use super::sqlite::SqliteStore;

/// The migrations, in order.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: devices and chain messages.
    "CREATE TABLE devices (
        id BLOB PRIMARY KEY,
        public_key BLOB NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'revoked')),
        hello BLOB NOT NULL,
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE chain_items (
        device BLOB NOT NULL,
        seq INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        hash BLOB NOT NULL,
        envelope BLOB NOT NULL,
        counted INTEGER NOT NULL,
        epoch INTEGER,
        leaf_index INTEGER,
        PRIMARY KEY (device, seq)
    ) WITHOUT ROWID;
    CREATE INDEX chain_items_epoch ON chain_items (epoch);",
    // 2: epochs and the local anchor log (one entry per epoch, never two).
    "CREATE TABLE epochs (
        epoch INTEGER PRIMARY KEY,
        tree_size INTEGER NOT NULL,
        root BLOB NOT NULL,
        closed_ms INTEGER NOT NULL,
        anchor_index INTEGER NOT NULL UNIQUE,
        anchor_entry BLOB NOT NULL
    );
    CREATE INDEX chain_items_time ON chain_items (device, timestamp_ms);",
    // 3: EVM anchors, signed and stored before they are sent.
    "CREATE TABLE evm_anchors (
        epoch INTEGER PRIMARY KEY REFERENCES epochs (epoch),
        chain_id INTEGER NOT NULL,
        contract BLOB NOT NULL,
        nonce INTEGER NOT NULL,
        tx_hash BLOB NOT NULL UNIQUE,
        raw_tx BLOB NOT NULL,
        block_number INTEGER,
        gas_used INTEGER,
        signed_ms INTEGER NOT NULL
    );",
    // 4: every version of a device's hello (each hour is judged by the one valid then).
    "CREATE TABLE hellos (
        device BLOB NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        envelope BLOB NOT NULL,
        PRIMARY KEY (device, timestamp_ms)
    ) WITHOUT ROWID;",
    // 5: the market's accounts, hashed API tokens, blob ownership (quotas), and jobs with
    // their state history and the blobs they name.
    "CREATE TABLE accounts (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('buyer', 'provider', 'operator')),
        name TEXT NOT NULL UNIQUE,
        quota_bytes INTEGER NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE api_tokens (
        id INTEGER PRIMARY KEY,
        account INTEGER NOT NULL REFERENCES accounts (id),
        hash BLOB NOT NULL UNIQUE,
        scopes TEXT NOT NULL,
        label TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        revoked_ms INTEGER
    );
    CREATE INDEX api_tokens_account ON api_tokens (account);
    CREATE TABLE blob_owners (
        account INTEGER NOT NULL REFERENCES accounts (id),
        hash BLOB NOT NULL,
        bytes INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        PRIMARY KEY (account, hash)
    ) WITHOUT ROWID;
    CREATE INDEX blob_owners_hash ON blob_owners (hash);
    CREATE TABLE jobs (
        id BLOB PRIMARY KEY,
        owner INTEGER NOT NULL REFERENCES accounts (id),
        state TEXT NOT NULL CHECK (state IN ('queued', 'scheduled', 'running', 'paused',
            'validating', 'done', 'failed', 'cancelled', 'expired')),
        job_order TEXT NOT NULL,
        deadline_ms INTEGER NOT NULL,
        flexible INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX jobs_owner ON jobs (owner, created_ms);
    CREATE INDEX jobs_state ON jobs (state, deadline_ms);
    CREATE TABLE job_events (
        job BLOB NOT NULL REFERENCES jobs (id),
        seq INTEGER NOT NULL,
        state TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        reason TEXT NOT NULL,
        PRIMARY KEY (job, seq)
    ) WITHOUT ROWID;
    CREATE TABLE job_blobs (
        job BLOB NOT NULL REFERENCES jobs (id),
        role TEXT NOT NULL CHECK (role IN ('input', 'module', 'output')),
        idx INTEGER NOT NULL,
        hash BLOB NOT NULL,
        bytes INTEGER,
        PRIMARY KEY (job, role, idx)
    ) WITHOUT ROWID;
    CREATE INDEX job_blobs_hash ON job_blobs (hash);",
    // 6: where each placed job runs (dispatch): its device, when it was sent, when it is
    // expected to end, and the nonce of its signed `RunJob`.
    "CREATE TABLE job_leases (
        job BLOB PRIMARY KEY REFERENCES jobs (id),
        device BLOB NOT NULL,
        start_ms INTEGER NOT NULL,
        expected_end_ms INTEGER NOT NULL,
        nonce INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 7: the device's last progress report on a placed job (its job events): chunks done
    // of how many, paused or not, and when it came.
    "ALTER TABLE job_leases ADD COLUMN chunks_done INTEGER;
    ALTER TABLE job_leases ADD COLUMN chunks INTEGER;
    ALTER TABLE job_leases ADD COLUMN paused INTEGER;
    ALTER TABLE job_leases ADD COLUMN progress_ms INTEGER;",
    // 8: which provider account runs each device (set by an operator): only that
    // provider's token fetches the inputs of jobs placed there and uploads their outputs.
    "CREATE TABLE device_providers (
        device BLOB PRIMARY KEY,
        provider INTEGER NOT NULL REFERENCES accounts (id),
        assigned_ms INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 9: the ledger: balanced transactions, their postings and every book's balance.
    "CREATE TABLE ledger_tx (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        job BLOB,
        memo TEXT NOT NULL,
        at_ms INTEGER NOT NULL
    );
    CREATE INDEX ledger_tx_job ON ledger_tx (job);
    CREATE TABLE ledger_postings (
        tx INTEGER NOT NULL REFERENCES ledger_tx (id),
        book TEXT NOT NULL,
        amount INTEGER NOT NULL
    );
    CREATE INDEX ledger_postings_book ON ledger_postings (book, tx);
    CREATE INDEX ledger_postings_tx ON ledger_postings (tx);
    CREATE TABLE ledger_balances (
        book TEXT PRIMARY KEY,
        balance INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 10: what dispatch saw each device do (its reputation's marks), with the evidence of
    // a wrong result.
    "CREATE TABLE device_marks (
        id INTEGER PRIMARY KEY,
        device BLOB NOT NULL,
        at_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        job BLOB,
        detail TEXT NOT NULL
    );
    CREATE INDEX device_marks_device ON device_marks (device, at_ms);",
    // 11: the ledger anchored: each posting's number in its book and the book's balance
    // after it; each transaction's controller-signed entry and its place in an epoch.
    "ALTER TABLE ledger_balances ADD COLUMN postings INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE ledger_postings ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE ledger_postings ADD COLUMN balance INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE ledger_tx ADD COLUMN envelope BLOB;
    ALTER TABLE ledger_tx ADD COLUMN epoch INTEGER;
    ALTER TABLE ledger_tx ADD COLUMN leaf INTEGER;
    CREATE INDEX ledger_tx_epoch ON ledger_tx (epoch, leaf);",
    // 12: performance probes: the known-answer job sent to a device, and what its receipt
    // showed.
    "CREATE TABLE probes (
        job BLOB PRIMARY KEY,
        device BLOB NOT NULL,
        sent_ms INTEGER NOT NULL,
        items INTEGER NOT NULL,
        expected BLOB NOT NULL,
        at_ms INTEGER,
        right INTEGER,
        items_per_s REAL,
        mj_per_item REAL,
        backend TEXT
    ) WITHOUT ROWID;
    CREATE INDEX probes_device ON probes (device, sent_ms);",
    // 13: settlement on chain: providers' payout addresses, rounds (root, total, where
    // published) and their lines.
    "CREATE TABLE payout_addresses (
        account INTEGER PRIMARY KEY,
        address TEXT NOT NULL,
        set_ms INTEGER NOT NULL
    );
    CREATE TABLE settlement_rounds (
        round INTEGER PRIMARY KEY,
        root BLOB NOT NULL,
        total INTEGER NOT NULL,
        lines INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        published_ms INTEGER,
        tx BLOB,
        block INTEGER,
        gas INTEGER
    );
    CREATE TABLE settlement_lines (
        round INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        account INTEGER NOT NULL,
        address TEXT NOT NULL,
        amount INTEGER NOT NULL,
        ledger_tx INTEGER NOT NULL,
        PRIMARY KEY (round, idx)
    ) WITHOUT ROWID;
    CREATE INDEX settlement_lines_account ON settlement_lines (account, round);",
    // 14: the runs of a job that runs more than once (redundancy, spot checks): where each
    // ran, what its receipt said, what it is to be paid.
    "CREATE TABLE job_runs (
        job BLOB NOT NULL,
        run INTEGER NOT NULL,
        device BLOB NOT NULL,
        start_ms INTEGER NOT NULL,
        receipt_seq INTEGER NOT NULL,
        output_hash BLOB NOT NULL,
        provider INTEGER,
        price INTEGER NOT NULL,
        needed INTEGER NOT NULL,
        why TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        PRIMARY KEY (job, run)
    ) WITHOUT ROWID;",
    // 15: energy attribute certificates buyers hold, and their retirements (each once, for
    // one job's hour), signed into the epochs like the ledger's entries.
    "CREATE TABLE certificates (
        id TEXT PRIMARY KEY,
        scheme TEXT NOT NULL CHECK (scheme IN ('granular', 'rec')),
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL,
        source TEXT NOT NULL,
        technology TEXT NOT NULL,
        producer TEXT NOT NULL,
        region TEXT NOT NULL,
        volume_wh INTEGER NOT NULL CHECK (volume_wh > 0),
        issuer TEXT NOT NULL,
        account INTEGER NOT NULL REFERENCES accounts (id),
        imported_ms INTEGER NOT NULL
    );
    CREATE INDEX certificates_account ON certificates (account);
    CREATE TABLE retirements (
        id INTEGER PRIMARY KEY,
        certificate TEXT NOT NULL UNIQUE REFERENCES certificates (id),
        job BLOB NOT NULL,
        device BLOB NOT NULL,
        hour INTEGER NOT NULL,
        account INTEGER NOT NULL REFERENCES accounts (id),
        covered_mg INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        envelope BLOB,
        epoch INTEGER,
        leaf INTEGER
    );
    CREATE INDEX retirements_job ON retirements (job, device);
    CREATE INDEX retirements_epoch ON retirements (epoch);",
    // 16: enrollment tokens (a device's provisioning redeems one to be approved) and the
    // enrollments they made (`waiting` until an unknown device's first hello takes it).
    "CREATE TABLE enrollment_tokens (
        id INTEGER PRIMARY KEY,
        hash BLOB NOT NULL UNIQUE,
        label TEXT NOT NULL,
        uses_left INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        revoked_ms INTEGER
    );
    CREATE TABLE enrollments (
        device BLOB PRIMARY KEY,
        token INTEGER NOT NULL REFERENCES enrollment_tokens (id),
        at_ms INTEGER NOT NULL,
        waiting INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 17: the web console: accounts' passwords (argon2id, PHC strings) and login sessions
    // (kept as SHA-256 of the cookie's secret, with the CSRF token of their forms).
    "CREATE TABLE passwords (
        account INTEGER PRIMARY KEY REFERENCES accounts (id),
        phc TEXT NOT NULL,
        set_ms INTEGER NOT NULL
    );
    CREATE TABLE console_sessions (
        hash BLOB PRIMARY KEY,
        account INTEGER NOT NULL REFERENCES accounts (id),
        csrf BLOB NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX console_sessions_expiry ON console_sessions (expires_ms);",
    // 18: alerts: each rule's state per subject (a device, a job) while it is pending or
    // firing, every firing and resolution (the webhook's outbox and the history), and
    // silences.
    "CREATE TABLE alert_states (
        rule TEXT NOT NULL,
        subject TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'firing')),
        value REAL NOT NULL,
        since_ms INTEGER NOT NULL,
        PRIMARY KEY (rule, subject)
    ) WITHOUT ROWID;
    CREATE TABLE alert_events (
        id INTEGER PRIMARY KEY,
        rule TEXT NOT NULL,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('firing', 'resolved')),
        value REAL NOT NULL,
        threshold REAL NOT NULL,
        detail TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        silenced INTEGER NOT NULL,
        delivered_ms INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE INDEX alert_events_undelivered ON alert_events (delivered_ms, silenced);
    CREATE TABLE alert_silences (
        id INTEGER PRIMARY KEY,
        rule TEXT,
        subject TEXT,
        until_ms INTEGER NOT NULL,
        reason TEXT NOT NULL,
        account INTEGER,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE alert_marks (
        name TEXT PRIMARY KEY,
        at_ms INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 19: operators' tags on devices (the fleet list filters by them; bulk actions set them).
    "CREATE TABLE device_tags (
        device BLOB NOT NULL,
        tag TEXT NOT NULL,
        PRIMARY KEY (device, tag)
    ) WITHOUT ROWID;
    CREATE INDEX device_tags_tag ON device_tags (tag);",
    // 20: a buyer's spend cap: the most micro-credits its jobs may hold in escrow over any
    // 24 hours (none: no cap). Checked in the transaction that stores a job.
    "ALTER TABLE accounts ADD COLUMN spend_cap_micro INTEGER;
    CREATE INDEX ledger_tx_kind_at ON ledger_tx (kind, at_ms);",
    // 21: each device's broker password, issued at enrollment, kept as Mosquitto's hash
    // (the password itself is shown to the device once).
    "CREATE TABLE broker_credentials (
        device BLOB PRIMARY KEY,
        hash TEXT NOT NULL,
        issued_ms INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 22: the audit log of operator actions (api/guard.rs).
    "CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        account INTEGER NOT NULL,
        token INTEGER NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        status INTEGER NOT NULL
    );",
    // 23: the rotations of the controller's key (attest::keys::KeyLink, postcard), which
    // bundles carry and devices follow.
    "CREATE TABLE key_rotations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        link BLOB NOT NULL
    );",
];

/// The schema version this code writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

impl SqliteStore {
    /// The schema version stored in the database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get::<_, u32>(0))?)
    }

    pub(super) fn migrate(&mut self) -> Result<(), StoreError> {
        let found = self.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as u32)?;
            tx.commit()?;
            tracing::info!(version = i + 1, "database migrated");
        }
        Ok(())
    }
}
