//! `#[rkyv(with = BulkMap)]`: a `BTreeMap` archived exactly as rkyv archives one,
//! but deserialized by collecting the archive's entries, which come out in key
//! order, and building the map in one pass, instead of inserting them one at a
//! time (a descent from the root and a dozen key comparisons each). Loading a
//! snapshot of a million deliveries is mostly this (BENCHMARKS.md, "What the
//! profiles showed", Restart).

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use rkyv::collections::btree_map::{ArchivedBTreeMap, BTreeMapResolver};
use rkyv::rancor::{Fallible, Source};
use rkyv::ser::{Allocator, Writer};
use rkyv::with::{ArchiveWith, DeserializeWith, SerializeWith};
use rkyv::{Archive, Deserialize, Place, Serialize};

#[derive(Debug)]
pub struct BulkMap;

impl<K: Archive + Ord, V: Archive> ArchiveWith<BTreeMap<K, V>> for BulkMap
where
    K::Archived: Ord,
{
    type Archived = ArchivedBTreeMap<K::Archived, V::Archived>;
    type Resolver = BTreeMapResolver;

    fn resolve_with(field: &BTreeMap<K, V>, resolver: Self::Resolver, out: Place<Self::Archived>) {
        ArchivedBTreeMap::resolve_from_len(field.len(), resolver, out);
    }
}

impl<K, V, S> SerializeWith<BTreeMap<K, V>, S> for BulkMap
where
    K: Serialize<S> + Ord,
    K::Archived: Ord,
    V: Serialize<S>,
    S: Allocator + Fallible + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize_with(
        field: &BTreeMap<K, V>,
        serializer: &mut S,
    ) -> Result<Self::Resolver, S::Error> {
        ArchivedBTreeMap::<K::Archived, V::Archived>::serialize_from_ordered_iter::<_, _, _, K, V, _>(
            field.iter(),
            serializer,
        )
    }
}

impl<K, V, D> DeserializeWith<ArchivedBTreeMap<K::Archived, V::Archived>, BTreeMap<K, V>, D>
    for BulkMap
where
    K: Archive + Ord,
    K::Archived: Deserialize<K, D> + Ord,
    V: Archive,
    V::Archived: Deserialize<V, D>,
    D: Fallible + ?Sized,
{
    fn deserialize_with(
        field: &ArchivedBTreeMap<K::Archived, V::Archived>,
        deserializer: &mut D,
    ) -> Result<BTreeMap<K, V>, D::Error> {
        let mut entries = Vec::with_capacity(field.len());
        let failed = field.visit(|k, v| {
            let entry = k
                .deserialize(deserializer)
                .and_then(|k| Ok((k, v.deserialize(deserializer)?)));
            match entry {
                Ok(entry) => {
                    entries.push(entry);
                    ControlFlow::Continue(())
                }
                Err(e) => ControlFlow::Break(e),
            }
        });
        match failed {
            Some(e) => Err(e),
            // In key order already: `from_iter`'s sort only checks it, then
            // the map is built bottom up with full nodes.
            None => Ok(entries.into_iter().collect()),
        }
    }
}
