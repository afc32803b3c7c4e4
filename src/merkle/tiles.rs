//! A tree stored as tiles, as the Go checksum database's transparent logs
//! store theirs: tile `(level, index)` holds the [`WIDTH`] hashes at tree
//! level `level * HEIGHT` numbered `index * WIDTH ..`, and is written once,
//! when its last hash is complete. The nodes between a tile's base and the
//! next tile level's are hashed again from the tile when a proof needs them
//! (at most `WIDTH / 2 - 1` hashes a node), and the leaf hashes are tile
//! level 0's base.
//!
//! So appending a leaf writes one row per `WIDTH` leaves (and one per
//! `WIDTH^2` at the level above, ...) where a row per node would be about
//! two, and a proof still reads O(log n) rows: one tile, or two, per tile
//! level. The hashes right of each level's last complete tile are the tree's
//! [`Edge`], stored with it and rewritten as it grows.

use std::cell::RefCell;

use super::{Frontier, Hash, Nodes, node_hash};

/// Tree levels a tile spans.
pub const HEIGHT: u8 = 4;
/// Hashes a tile holds.
pub const WIDTH: usize = 1 << HEIGHT;

/// A complete tile's hashes, left to right.
pub type Tile = Box<[Hash; WIDTH]>;

/// The root of the perfect subtree over `hashes` (a power of two of them,
/// each the root of a perfect subtree of one height).
pub fn subtree(hashes: &[Hash]) -> Hash {
    debug_assert!(hashes.len().is_power_of_two());
    let mut level: Vec<Hash> = hashes.to_vec();
    while level.len() > 1 {
        level = level
            .chunks_exact(2)
            .map(|pair| node_hash(&pair[0], &pair[1]))
            .collect();
    }
    level[0]
}

/// The right edge of a tiled tree: its size, and at each tile level the
/// hashes right of its last complete tile (fewer than [`WIDTH`]; how many is
/// the size's digit in base `WIDTH` at that level).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edge {
    pub size: u64,
    partial: Vec<Vec<Hash>>,
}

impl Edge {
    /// Appends a leaf hash, handing `done` each tile it completes as
    /// `(tile level, tile index, tile)`.
    pub fn push(&mut self, leaf: Hash, mut done: impl FnMut(u8, u64, Tile)) {
        let mut hash = leaf;
        let mut level = 0u8;
        loop {
            let at = usize::from(level);
            if self.partial.len() == at {
                self.partial.push(Vec::with_capacity(WIDTH));
            }
            let row = &mut self.partial[at];
            row.push(hash);
            if row.len() < WIDTH {
                break;
            }
            let tile: Tile =
                Box::new(<[Hash; WIDTH]>::try_from(row.as_slice()).expect("a full tile"));
            row.clear();
            hash = subtree(&tile[..]);
            let index = (self.size >> (u32::from(level) * u32::from(HEIGHT))) >> HEIGHT;
            done(level, index, tile);
            level += 1;
        }
        self.size += 1;
    }

    /// The peaks, as a plain frontier holds them: at each tile level from
    /// the top, the partial hashes grouped by the bits of their count.
    pub fn frontier(&self) -> Frontier {
        let mut peaks = Vec::with_capacity(self.size.count_ones() as usize);
        for row in self.partial.iter().rev() {
            let mut start = 0;
            for bit in (0..HEIGHT).rev() {
                let n = 1usize << bit;
                if row.len() & n != 0 {
                    peaks.push(subtree(&row[start..start + n]));
                    start += n;
                }
            }
        }
        Frontier {
            size: self.size,
            peaks,
        }
    }

    /// The tree's root (RFC 9162's MTH over all its leaves).
    pub fn root(&self) -> Hash {
        self.frontier().root()
    }

    /// How many hashes tile level `level`'s partial tile holds at `size`.
    fn partial_len(size: u64, level: usize) -> usize {
        let shift = level as u32 * u32::from(HEIGHT);
        if shift >= 64 {
            return 0;
        }
        ((size >> shift) as usize) & (WIDTH - 1)
    }

    /// The heap bytes it holds.
    pub fn heap(&self) -> usize {
        self.partial.capacity() * size_of::<Vec<Hash>>()
            + self
                .partial
                .iter()
                .map(|row| row.capacity() * size_of::<Hash>())
                .sum::<usize>()
    }

    /// `size` then each tile level's partial hashes, level 0 first, as stored.
    pub fn encode(&self) -> Vec<u8> {
        let hashes: usize = self.partial.iter().map(Vec::len).sum();
        let mut out = Vec::with_capacity(8 + 32 * hashes);
        out.extend_from_slice(&self.size.to_be_bytes());
        for hash in self.partial.iter().flatten() {
            out.extend_from_slice(hash);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Edge> {
        let (size, mut rest) = bytes.split_first_chunk::<8>()?;
        let size = u64::from_be_bytes(*size);
        // One tile level for each base-`WIDTH` digit of the size.
        let levels = (64 - size.leading_zeros()).div_ceil(u32::from(HEIGHT)) as usize;
        let mut partial = Vec::with_capacity(levels);
        for level in 0..levels {
            let n = Edge::partial_len(size, level);
            let (row, tail) = rest.split_at_checked(32 * n)?;
            let mut hashes = Vec::with_capacity(WIDTH);
            hashes.extend(
                row.chunks_exact(32)
                    .map(|c| <Hash>::try_from(c).expect("32 bytes")),
            );
            partial.push(hashes);
            rest = tail;
        }
        rest.is_empty().then_some(Edge { size, partial })
    }
}

/// Where a tree's complete tiles are read from.
pub trait Tiles {
    type Error;
    /// Tile `(level, index)`; an error if it is not stored.
    fn tile(&self, level: u8, index: u64) -> Result<Tile, Self::Error>;
}

/// A tree's nodes as its tiles and edge hold them: each node hashed from
/// the one tile, stored or partial, that holds the base of its subtree.
/// Keeps the tiles it read, so a proof reads each one once.
#[derive(Debug)]
pub struct TiledNodes<'a, T> {
    edge: &'a Edge,
    tiles: T,
    read: RefCell<Vec<(u8, u64, Tile)>>,
}

impl<'a, T: Tiles> TiledNodes<'a, T> {
    pub fn new(edge: &'a Edge, tiles: T) -> Self {
        TiledNodes {
            edge,
            tiles,
            read: RefCell::new(Vec::new()),
        }
    }

    fn stored(
        &self,
        level: u8,
        index: u64,
        range: std::ops::Range<usize>,
    ) -> Result<Hash, T::Error> {
        let mut read = self.read.borrow_mut();
        if let Some((_, _, tile)) = read.iter().find(|(l, i, _)| (*l, *i) == (level, index)) {
            return Ok(subtree(&tile[range]));
        }
        let tile = self.tiles.tile(level, index)?;
        let hash = subtree(&tile[range]);
        read.push((level, index, tile));
        Ok(hash)
    }
}

impl<T: Tiles> Nodes for TiledNodes<'_, T> {
    type Error = T::Error;

    fn node(&self, level: u8, index: u64) -> Result<Hash, T::Error> {
        let (tile_level, height) = (level / HEIGHT, level % HEIGHT);
        let first = index << height;
        let tile = first >> HEIGHT;
        let start = (first as usize) & (WIDTH - 1);
        let range = start..start + (1 << height);
        let base = u32::from(tile_level) * u32::from(HEIGHT);
        let partial_tile = (self.edge.size >> base) >> HEIGHT;
        if tile == partial_tile
            && let Some(row) = self.edge.partial.get(usize::from(tile_level))
            && range.end <= row.len()
        {
            return Ok(subtree(&row[range]));
        }
        // A tile left of the edge's is stored; asked for any other, the
        // store answers that it has none.
        self.stored(tile_level, tile, range)
    }
}
