//! A disk that loses power: [`PowerCutDisk`] keeps, for every file, what an fsync made
//! durable apart from what was only written, and for every directory which creations,
//! renames and unlinks a directory fsync made durable (LazyFS's model: the page cache is
//! lost, the disk is not). [`DiskImage::power_cut`] gives what a power cut at any moment
//! leaves: only the durable state, everything (a process crash), or the durable state plus
//! a random prefix of the unsynced writes with the last one torn (ordered write-back cut off
//! mid-page). It can also run out of space (a write stops where the space ends, ENOSPC).
//!
//! [`campaign`] runs an outbox workload on it and, after every single disk operation,
//! cuts the power in several ways and checks what recovery finds: every record whose
//! append had returned is there (or acknowledged), no record is invented or altered, no
//! acknowledgement is invented, and the outbox takes the next record. Directories are
//! taken as durable once made (the outbox's own directory is made once, at provisioning).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::disk::Disk;

type Ino = u64;

/// SplitMix64, for reproducible random choices from a seed.
#[derive(Debug, Clone)]
pub struct Mix(pub u64);

impl Mix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next_u64() % (hi - lo)
        }
    }
}

#[derive(Debug, Clone)]
enum DataOp {
    Append(Vec<u8>),
    /// Truncate to zero, then write.
    Replace(Vec<u8>),
    SetLen(u64),
}

impl DataOp {
    fn apply(&self, data: &mut Vec<u8>) {
        match self {
            DataOp::Append(b) => data.extend_from_slice(b),
            DataOp::Replace(b) => *data = b.clone(),
            DataOp::SetLen(n) => data.resize(*n as usize, 0),
        }
    }

    /// The op cut short: only its first `keep` bytes reached the disk.
    fn torn(&self, keep: usize) -> DataOp {
        match self {
            DataOp::Append(b) => DataOp::Append(b[..keep.min(b.len())].to_vec()),
            DataOp::Replace(b) => DataOp::Replace(b[..keep.min(b.len())].to_vec()),
            DataOp::SetLen(n) => DataOp::SetLen(*n),
        }
    }

    fn len(&self) -> usize {
        match self {
            DataOp::Append(b) | DataOp::Replace(b) => b.len(),
            DataOp::SetLen(_) => 0,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<DataOp>,
}

#[derive(Debug, Clone)]
enum NameOp {
    Link(PathBuf, Ino),
    Unlink(PathBuf),
    Rename(PathBuf, PathBuf, Ino),
}

impl NameOp {
    fn dir(&self) -> Option<&Path> {
        match self {
            NameOp::Link(p, _) | NameOp::Unlink(p) | NameOp::Rename(_, p, _) => p.parent(),
        }
    }

    fn apply(&self, names: &mut BTreeMap<PathBuf, Ino>) {
        match self {
            NameOp::Link(p, i) => {
                names.insert(p.clone(), *i);
            }
            NameOp::Unlink(p) => {
                names.remove(p);
            }
            NameOp::Rename(from, to, i) => {
                names.remove(from);
                names.insert(to.clone(), *i);
            }
        }
    }
}

/// How the power goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Everything not fsynced is lost (LazyFS's default).
    DropUnsynced,
    /// Nothing is lost (a process crash: the kernel still writes its cache back).
    KeepAll,
    /// A random prefix of each file's unsynced writes and of the unsynced directory
    /// changes reached the disk, the last write possibly torn.
    Partial { seed: u64 },
}

/// The whole state of a simulated disk.
#[derive(Debug, Clone, Default)]
pub struct DiskImage {
    names: BTreeMap<PathBuf, Ino>,
    durable_names: BTreeMap<PathBuf, Ino>,
    unsynced_names: Vec<NameOp>,
    dirs: BTreeSet<PathBuf>,
    inodes: BTreeMap<Ino, Inode>,
    next_ino: Ino,
    /// Most bytes the files may hold together (ENOSPC past it).
    pub capacity: Option<u64>,
    /// Mutating operations so far.
    pub ops: u64,
}

fn not_found(path: &Path) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl DiskImage {
    fn used(&self) -> u64 {
        let live: BTreeSet<Ino> = self.names.values().copied().collect();
        live.iter().map(|i| self.inodes[i].data.len() as u64).sum()
    }

    fn inode(&mut self, path: &Path) -> std::io::Result<&mut Inode> {
        let ino = *self.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(self.inodes.get_mut(&ino).expect("named inode"))
    }

    fn new_file(&mut self, path: &Path) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, Inode::default());
        self.names.insert(path.to_path_buf(), ino);
        self.unsynced_names
            .push(NameOp::Link(path.to_path_buf(), ino));
        ino
    }

    /// What a power cut now leaves on the disk (every byte of it durable).
    pub fn power_cut(&self, cut: Cut) -> DiskImage {
        let mut rng = match cut {
            Cut::Partial { seed } => Some(Mix(seed)),
            _ => None,
        };
        let mut pick = |n: usize| {
            rng.as_mut()
                .map_or(n, |r| (r.next_u64() % (n as u64 + 1)) as usize)
        };
        let names = match cut {
            Cut::KeepAll => self.names.clone(),
            Cut::DropUnsynced => self.durable_names.clone(),
            Cut::Partial { .. } => {
                let mut n = self.durable_names.clone();
                let k = pick(self.unsynced_names.len());
                for op in &self.unsynced_names[..k] {
                    op.apply(&mut n);
                }
                n
            }
        };
        let mut inodes = BTreeMap::new();
        for ino in names.values().copied().collect::<BTreeSet<_>>() {
            let node = &self.inodes[&ino];
            let data = match cut {
                Cut::KeepAll => node.data.clone(),
                Cut::DropUnsynced => node.durable.clone(),
                Cut::Partial { .. } => {
                    let mut d = node.durable.clone();
                    let k = pick(node.unsynced.len());
                    for op in &node.unsynced[..k] {
                        op.apply(&mut d);
                    }
                    if let Some(next) = node.unsynced.get(k)
                        && next.len() > 1
                    {
                        let keep = pick(next.len() - 1);
                        next.torn(keep).apply(&mut d);
                    }
                    d
                }
            };
            inodes.insert(
                ino,
                Inode {
                    durable: data.clone(),
                    data,
                    unsynced: Vec::new(),
                },
            );
        }
        DiskImage {
            durable_names: names.clone(),
            names,
            unsynced_names: Vec::new(),
            dirs: self.dirs.clone(),
            inodes,
            next_ino: self.next_ino,
            capacity: None,
            ops: 0,
        }
    }

    /// A file's bytes as they stand (tests: damage it with [`DiskImage::put`]).
    pub fn get(&self, path: &Path) -> Option<Vec<u8>> {
        self.names.get(path).map(|i| self.inodes[i].data.clone())
    }

    /// Replaces a file's bytes, durably (damage done to a disk, not a write through it).
    pub fn put(&mut self, path: &Path, bytes: Vec<u8>) {
        let ino = match self.names.get(path) {
            Some(i) => *i,
            None => {
                let i = self.new_file(path);
                self.durable_names.insert(path.to_path_buf(), i);
                self.unsynced_names.clear();
                i
            }
        };
        let node = self.inodes.get_mut(&ino).expect("inode");
        node.durable = bytes.clone();
        node.data = bytes;
        node.unsynced.clear();
    }

    /// The paths of the files in `dir`, in order.
    pub fn files_in(&self, dir: &Path) -> Vec<PathBuf> {
        self.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .cloned()
            .collect()
    }
}

/// Called after every mutating operation with the disk's state.
pub type Observer = Box<dyn FnMut(&DiskImage) + Send>;

/// A simulated disk (see the module's documentation).
pub struct PowerCutDisk {
    image: Mutex<DiskImage>,
    observer: Mutex<Option<Observer>>,
}

impl std::fmt::Debug for PowerCutDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PowerCutDisk")
    }
}

impl PowerCutDisk {
    /// A disk holding `image`.
    pub fn new(image: DiskImage) -> PowerCutDisk {
        PowerCutDisk {
            image: Mutex::new(image),
            observer: Mutex::new(None),
        }
    }

    /// Calls `f` after every mutating operation from now on.
    pub fn observe(&self, f: Observer) {
        *self.observer.lock().unwrap() = Some(f);
    }

    /// The disk's state now.
    pub fn image(&self) -> DiskImage {
        self.image.lock().unwrap().clone()
    }

    /// Sets (or lifts) the space limit.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.image.lock().unwrap().capacity = bytes;
    }

    /// Bytes the files hold.
    pub fn used(&self) -> u64 {
        self.image.lock().unwrap().used()
    }

    fn read_op<T>(
        &self,
        f: impl FnOnce(&mut DiskImage) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        f(&mut self.image.lock().unwrap())
    }

    fn write_op<T>(
        &self,
        f: impl FnOnce(&mut DiskImage) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        let (result, snapshot) = {
            let mut img = self.image.lock().unwrap();
            let r = f(&mut img);
            img.ops += 1;
            (r, img.clone())
        };
        if let Some(obs) = self.observer.lock().unwrap().as_mut() {
            obs(&snapshot);
        }
        result
    }
}

impl Disk for PowerCutDisk {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.read_op(|img| {
            for d in dir.ancestors() {
                img.dirs.insert(d.to_path_buf());
            }
            Ok(())
        })
    }

    fn list(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        self.read_op(|img| {
            let mut out = img.files_in(dir);
            out.extend(img.dirs.iter().filter(|d| d.parent() == Some(dir)).cloned());
            Ok(out)
        })
    }

    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.read_op(|img| Ok(img.inode(path)?.data.clone()))
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.read_op(|img| {
            let data = &img.inode(path)?.data;
            let src = data
                .get(offset as usize..offset as usize + buf.len())
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
            buf.copy_from_slice(src);
            Ok(())
        })
    }

    fn create(&self, path: &Path) -> std::io::Result<u64> {
        self.write_op(|img| {
            if !img.names.contains_key(path) {
                img.new_file(path);
            }
            Ok(img.inode(path)?.data.len() as u64)
        })
    }

    fn append(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        self.write_op(|img| {
            let room = img
                .capacity
                .map_or(u64::MAX, |c| c.saturating_sub(img.used()));
            let n = (bytes.len() as u64).min(room) as usize;
            let node = img.inode(path)?;
            let op = DataOp::Append(bytes[..n].to_vec());
            op.apply(&mut node.data);
            node.unsynced.push(op);
            if n < bytes.len() {
                return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
            }
            Ok(())
        })
    }

    fn set_len(&self, path: &Path, len: u64) -> std::io::Result<()> {
        self.write_op(|img| {
            let node = img.inode(path)?;
            let op = DataOp::SetLen(len);
            op.apply(&mut node.data);
            node.unsynced.push(op);
            Ok(())
        })
    }

    fn sync(&self, path: &Path) -> std::io::Result<()> {
        self.write_op(|img| {
            let node = img.inode(path)?;
            node.durable = node.data.clone();
            node.unsynced.clear();
            Ok(())
        })
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        self.write_op(|img| {
            if !img.names.contains_key(path) {
                img.new_file(path);
            }
            let room = img.capacity.map_or(u64::MAX, |c| {
                let others = img.used() - img.inode(path).map_or(0, |n| n.data.len() as u64);
                c.saturating_sub(others)
            });
            let n = (bytes.len() as u64).min(room) as usize;
            let node = img.inode(path)?;
            let op = DataOp::Replace(bytes[..n].to_vec());
            op.apply(&mut node.data);
            node.unsynced.push(op);
            if n < bytes.len() {
                return Err(std::io::Error::from_raw_os_error(28));
            }
            Ok(())
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.write_op(|img| {
            let ino = img.names.remove(from).ok_or_else(|| not_found(from))?;
            img.names.insert(to.to_path_buf(), ino);
            img.unsynced_names
                .push(NameOp::Rename(from.to_path_buf(), to.to_path_buf(), ino));
            Ok(())
        })
    }

    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.write_op(|img| {
            img.names.remove(path).ok_or_else(|| not_found(path))?;
            img.unsynced_names.push(NameOp::Unlink(path.to_path_buf()));
            Ok(())
        })
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.write_op(|img| {
            img.durable_names.retain(|p, _| p.parent() != Some(dir));
            for (p, i) in &img.names {
                if p.parent() == Some(dir) {
                    img.durable_names.insert(p.clone(), *i);
                }
            }
            img.unsynced_names.retain(|op| op.dir() != Some(dir));
            Ok(())
        })
    }
}
