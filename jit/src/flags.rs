//! Memory flags and alias regions of the code the translator emits: which
//! loads Cranelift may merge, hoist or reorder (see the rationale at the
//! top of `translate.rs`). Shared by the scalar translator and `simd`.

use cranelift_codegen::ir::{self, Endianness, Function, MemFlagsData};

/// Alias region of linear-memory accesses (every memory of the module):
/// only loads and stores of wasm linear memory are tagged with it.
pub(crate) const REGION_HEAP: u32 = 0;
/// Alias region of mutable runtime words that wasm code reads but never
/// writes: `VMMemory.length`, `VMTable.{base,length}`, `VMFuncRef` fields.
/// Only calls (fences) change them.
pub(crate) const REGION_VMCTX: u32 = 1;
/// Alias region of global variables' storage (`VMGlobal`).
pub(crate) const REGION_GLOBALS: u32 = 2;
/// Alias region of table elements.
pub(crate) const REGION_TABLES: u32 = 3;

/// Declares the alias regions of a function, in the order of the
/// `REGION_*` constants, so that `AliasRegion::from_u32(REGION_X)` names
/// region X in every function. Must be the first regions declared.
pub(crate) fn declare_alias_regions(func: &mut Function) {
    let names: [(u32, &'static str); 4] = [
        (REGION_HEAP, "heap"),
        (REGION_VMCTX, "vmctx"),
        (REGION_GLOBALS, "globals"),
        (REGION_TABLES, "tables"),
    ];
    for (id, name) in names {
        let r = func.dfg.alias_regions.insert(ir::AliasRegionData {
            user_id: id,
            description: name.into(),
        });
        assert_eq!(r.as_u32(), id, "alias regions declared first, in order");
    }
}

pub(crate) fn region(id: u32) -> Option<ir::AliasRegion> {
    Some(ir::AliasRegion::from_u32(id))
}

/// Flags for runtime words that never change while the code runs and are
/// always dereferenceable: the vmctx's pointers (store, builtins table,
/// each memory's `VMMemory`, each table's `VMTable`, each global's
/// storage, imported functions' code and vmctx), the store's epoch
/// pointer, the builtins' addresses and a memory's base (memories grow in
/// place: `VMMemory.base` never changes). `can_move` lets Cranelift
/// merge and hoist these loads freely, even above a bounds check or a
/// branch, which is safe only because none of them depends on a value
/// the guest controls: each is a fixed offset from the vmctx or from
/// another such pointer.
pub(crate) fn ro() -> MemFlagsData {
    MemFlagsData::trusted().with_readonly().with_can_move()
}
/// Trusted flags for runtime words that may change (only through calls).
pub(crate) fn rw() -> MemFlagsData {
    MemFlagsData::trusted().with_alias_region(region(REGION_VMCTX))
}
/// Trusted flags for global variables' storage.
pub(crate) fn globals() -> MemFlagsData {
    MemFlagsData::trusted().with_alias_region(region(REGION_GLOBALS))
}
/// Trusted flags for table elements (already bounds-checked).
pub(crate) fn table_elems() -> MemFlagsData {
    MemFlagsData::trusted().with_alias_region(region(REGION_TABLES))
}
/// Flags for linear memory accesses: may trap (heap out of bounds),
/// little-endian, in the heap's own alias region.
pub(crate) fn heap() -> MemFlagsData {
    MemFlagsData::new()
        .with_endianness(Endianness::Little)
        .with_alias_region(region(REGION_HEAP))
}
