//! [`Memory`], [`Table`], [`Global`] and [`Extern`]: what instances import
//! and export.

use crate::handles::{Global, Memory, Table};
use crate::store::Store;
use crate::trap::Error;
use crate::values::{from_raw, to_raw, Val};
use faaslet_jit::{GlobalType, MemoryType, RefType, TableType, ValType};

impl Memory {
    /// Creates a memory in `store`.
    pub fn new<T>(store: &mut Store<T>, ty: MemoryType) -> Result<Memory, Error> {
        let core = store.core_mut();
        let index = core.push_memory(ty)?;
        Ok(Memory {
            store: core.id,
            index,
        })
    }

    /// The memory's type, with its current size as the minimum.
    pub fn ty<T>(&self, store: &Store<T>) -> MemoryType {
        let e = &store.core().memories[self.index as usize];
        MemoryType {
            minimum: self.size(store),
            ..e.ty
        }
    }

    /// Current size in 64 KiB pages.
    pub fn size<T>(&self, store: &Store<T>) -> u64 {
        self.check(store);
        store.core().memories[self.index as usize].length() / faaslet_sfi::WASM_PAGE as u64
    }

    /// The memory's bytes as a slice, if only this store's thread can
    /// write them. `None` for a shared (threads) memory and for a memory
    /// with a file mapped into it shared ([`Caller::map_shared`](crate::Caller::map_shared),
    /// as Faasm state is): other threads write those bytes at any time,
    /// and a Rust slice over bytes that change under it is unsound. Use
    /// [`read`](Self::read) / [`write`](Self::write) (copies), or
    /// [`data_ptr`](Self::data_ptr) with raw-pointer accesses, for those.
    pub fn data<'a, T>(&self, store: &'a Store<T>) -> Option<&'a [u8]> {
        self.check(store);
        store.core().memories[self.index as usize].bytes()
    }

    /// The memory's bytes, mutably, if only this store's thread can write
    /// them (see [`data`](Self::data)).
    pub fn data_mut<'a, T>(&self, store: &'a mut Store<T>) -> Option<&'a mut [u8]> {
        self.check(store);
        store.core_mut().memories[self.index as usize].bytes_mut()
    }

    /// The address of the memory's byte 0. It never changes for the
    /// memory's life (memories grow in place), and the first
    /// [`data_size`](Self::data_size) bytes are readable and writable
    /// while the store lives and is not reset. Other threads may write
    /// them (see [`data`](Self::data)): access them through raw pointers.
    pub fn data_ptr<T>(&self, store: &Store<T>) -> *mut u8 {
        self.check(store);
        store.core().memories[self.index as usize].base()
    }

    /// The memory's current size in bytes.
    pub fn data_size<T>(&self, store: &Store<T>) -> usize {
        self.check(store);
        store.core().memories[self.index as usize].length() as usize
    }

    /// The pages written since the last call (or since it was mapped) in
    /// the shared mapping that starts at guest address `addr` (made by
    /// [`Caller::map_shared`](crate::Caller::map_shared)), as merged,
    /// page-granular guest address ranges; each write is reported once.
    /// `None` if no mapping starts there or this kernel does not track
    /// writes (`faaslet_sfi::writes::available`).
    pub fn take_written<T>(
        &self,
        store: &mut Store<T>,
        addr: u64,
    ) -> Result<Option<Vec<std::ops::Range<u64>>>, Error> {
        self.check(store);
        store.core().memories[self.index as usize]
            .data
            .take_written(addr)
    }

    /// Grows by `delta` pages, returning the old size. The memory never moves.
    pub fn grow<T>(&self, store: &mut Store<T>, delta: u64) -> Result<u64, Error> {
        self.check(store);
        let core = store.core();
        core.check_memory_growth(delta.saturating_mul(faaslet_sfi::WASM_PAGE as u64))?;
        let e = &core.memories[self.index as usize];
        e.grow(delta).ok_or_else(|| {
            Error::Resource(format!(
                "cannot grow memory by {delta} pages (limit {} pages)",
                e.limit_pages
            ))
        })
    }

    /// Copies `buf.len()` bytes from `offset` into `buf` (any memory,
    /// shared or not).
    pub fn read<T>(&self, store: &Store<T>, offset: usize, buf: &mut [u8]) -> Result<(), Error> {
        self.check(store);
        if store.core().memories[self.index as usize].read(offset as u64, buf) {
            Ok(())
        } else {
            Err(Error::Resource(format!(
                "read of {} bytes at {offset} is out of bounds",
                buf.len()
            )))
        }
    }

    /// Copies `buf` into the memory at `offset` (any memory, shared or
    /// not).
    pub fn write<T>(&self, store: &mut Store<T>, offset: usize, buf: &[u8]) -> Result<(), Error> {
        self.check(store);
        if store.core().memories[self.index as usize].write(offset as u64, buf) {
            Ok(())
        } else {
            Err(Error::Resource(format!(
                "write of {} bytes at {offset} is out of bounds",
                buf.len()
            )))
        }
    }

    fn check<T>(&self, store: &Store<T>) {
        assert_eq!(
            self.store,
            store.core().id,
            "Memory used with a store that did not create it"
        );
    }
}

fn ref_type_of(v: &Val) -> Option<RefType> {
    match v {
        Val::FuncRef(_) => Some(RefType::Func),
        Val::ExternRef(_) => Some(RefType::Extern),
        Val::ExnRef(_) => Some(RefType::Exn),
        _ => None,
    }
}

impl Table {
    /// Creates a table whose elements start as `init`.
    pub fn new<T>(store: &mut Store<T>, ty: TableType, init: Val) -> Result<Table, Error> {
        if ref_type_of(&init) != Some(ty.element) {
            return Err(Error::Type(format!(
                "table of {:?} initialised with {}",
                ty.element,
                init.ty()
            )));
        }
        let core = store.core_mut();
        let raw = to_raw(core, &init)? as u64;
        let index = core.push_table(ty, raw)?;
        Ok(Table {
            store: core.id,
            index,
        })
    }

    /// The table's type, with its current size as the minimum.
    pub fn ty<T>(&self, store: &Store<T>) -> TableType {
        let e = &store.core().tables[self.index as usize];
        TableType {
            minimum: e.elems.len() as u64,
            ..e.ty
        }
    }

    /// Current number of elements.
    pub fn size<T>(&self, store: &Store<T>) -> u64 {
        store
            .core()
            .check(self.store)
            .expect("Table used with another store");
        store.core().tables[self.index as usize].elems.len() as u64
    }

    /// Element `index`, or None if out of bounds.
    pub fn get<T>(&self, store: &mut Store<T>, index: u64) -> Option<Val> {
        let core = store.core_mut();
        core.check(self.store).ok()?;
        let e = &core.tables[self.index as usize];
        let raw = *e.elems.get(usize::try_from(index).ok()?)?;
        let ty = ValType::from(e.ty.element);
        Some(from_raw(core, ty, raw as u128))
    }

    /// Sets element `index`.
    pub fn set<T>(&self, store: &mut Store<T>, index: u64, val: Val) -> Result<(), Error> {
        let core = store.core_mut();
        core.check(self.store)?;
        let elem = core.tables[self.index as usize].ty.element;
        if ref_type_of(&val) != Some(elem) {
            return Err(Error::Type(format!(
                "cannot store {} in a table of {elem:?}",
                val.ty()
            )));
        }
        let raw = to_raw(core, &val)? as u64;
        let slot = usize::try_from(index)
            .ok()
            .and_then(|i| core.tables[self.index as usize].elems.get_mut(i))
            .ok_or_else(|| Error::Resource(format!("table index {index} out of bounds")))?;
        *slot = raw;
        Ok(())
    }

    /// Grows by `delta` elements set to `init`, returning the old size.
    pub fn grow<T>(&self, store: &mut Store<T>, delta: u64, init: Val) -> Result<u64, Error> {
        let core = store.core_mut();
        core.check(self.store)?;
        let raw = to_raw(core, &init)? as u64;
        core.check_table_growth(delta)?;
        let e = &mut core.tables[self.index as usize];
        if ref_type_of(&init) != Some(e.ty.element) {
            return Err(Error::Type(format!(
                "cannot grow a table of {:?} with {}",
                e.ty.element,
                init.ty()
            )));
        }
        e.grow(delta, raw)
            .ok_or_else(|| Error::Resource(format!("cannot grow table by {delta} elements")))
    }
}

impl Global {
    /// Creates a global holding `val`.
    pub fn new<T>(store: &mut Store<T>, ty: GlobalType, val: Val) -> Result<Global, Error> {
        if val.ty() != ty.content {
            return Err(Error::Type(format!(
                "global of type {} initialised with {}",
                ty.content,
                val.ty()
            )));
        }
        let core = store.core_mut();
        let raw = to_raw(core, &val)?;
        let index = core.push_global(ty, raw);
        Ok(Global {
            store: core.id,
            index,
        })
    }

    /// The global's type.
    pub fn ty<T>(&self, store: &Store<T>) -> GlobalType {
        store.core().globals[self.index as usize].ty
    }

    /// The current value.
    pub fn get<T>(&self, store: &mut Store<T>) -> Val {
        let core = store.core_mut();
        core.check(self.store)
            .expect("Global used with another store");
        let e = &core.globals[self.index as usize];
        let (ty, bits) = (e.ty.content, e.vm.bits);
        from_raw(core, ty, bits)
    }

    /// Sets the value of a mutable global.
    pub fn set<T>(&self, store: &mut Store<T>, val: Val) -> Result<(), Error> {
        let core = store.core_mut();
        core.check(self.store)?;
        let ty = core.globals[self.index as usize].ty;
        if !ty.mutable {
            return Err(Error::Type("cannot set an immutable global".into()));
        }
        if val.ty() != ty.content {
            return Err(Error::Type(format!(
                "cannot set a global of type {} to {}",
                ty.content,
                val.ty()
            )));
        }
        let raw = to_raw(core, &val)?;
        core.globals[self.index as usize].vm.bits = raw;
        Ok(())
    }
}
