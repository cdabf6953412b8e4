//! [`Linker`]: resolves imports by name, from host functions and the
//! exports of earlier instances.

use crate::entries::HostCall;
use crate::func::{Caller, HostFn, IntoFunc};
use crate::handles::{Extern, Func, Instance};
use crate::module::Module;
use crate::store::Store;
use crate::trap::{Error, Trap};
use crate::values::Val;
use faaslet_jit::FuncType;
use std::collections::HashMap;
use std::sync::Arc;

enum Definition<T> {
    Extern(Extern),
    HostFunc(FuncType, Arc<HostFn<T>>),
    RawHostFunc(FuncType, Arc<HostCall>),
}

impl<T> Clone for Definition<T> {
    fn clone(&self) -> Self {
        match self {
            Definition::Extern(e) => Definition::Extern(*e),
            Definition::HostFunc(t, f) => Definition::HostFunc(t.clone(), f.clone()),
            Definition::RawHostFunc(t, f) => Definition::RawHostFunc(t.clone(), f.clone()),
        }
    }
}

/// The definitions of a linker: each in `items`, found by module, then
/// name (so a lookup by `&str` allocates nothing).
struct Defs<T> {
    items: Vec<Definition<T>>,
    index: HashMap<String, HashMap<String, usize>>,
}

impl<T> Clone for Defs<T> {
    fn clone(&self) -> Self {
        Defs {
            items: self.items.clone(),
            index: self.index.clone(),
        }
    }
}

/// Resolves a module's imports by `(module, name)` and instantiates it.
///
/// Host functions defined with [`Linker::func_new`] are store-independent:
/// one linker serves any number of stores. Cloning a linker is cheap (the
/// definitions are shared until one side defines more), so a host that
/// makes a store per call links its host interface once and clones the
/// linker for each store.
pub struct Linker<T> {
    engine: crate::engine::Engine,
    defs: Arc<Defs<T>>,
    /// Host functions already materialised per store: (store id, index of
    /// the definition) → Func.
    made: HashMap<(u64, usize), Func>,
}

impl<T> std::fmt::Debug for Linker<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Linker")
            .field("definitions", &self.defs.items.len())
            .finish()
    }
}

impl<T> Clone for Linker<T> {
    /// The same definitions (shared), with no host function materialised
    /// in any store yet.
    fn clone(&self) -> Self {
        Linker {
            engine: self.engine.clone(),
            defs: self.defs.clone(),
            made: HashMap::new(),
        }
    }
}

impl<T: 'static> Linker<T> {
    /// An empty linker.
    pub fn new(engine: &crate::engine::Engine) -> Linker<T> {
        Linker {
            engine: engine.clone(),
            defs: Arc::new(Defs {
                items: Vec::new(),
                index: HashMap::new(),
            }),
            made: HashMap::new(),
        }
    }

    /// The engine the linker's host functions are made for.
    pub fn engine(&self) -> &crate::engine::Engine {
        &self.engine
    }

    /// Adds or replaces `module`.`name`.
    fn insert(&mut self, module: &str, name: &str, def: Definition<T>) {
        // Copy-on-write: clones made earlier keep their definitions.
        let defs = Arc::make_mut(&mut self.defs);
        let names = defs.index.entry(module.to_string()).or_default();
        match names.get(name) {
            Some(&i) => defs.items[i] = def,
            None => {
                names.insert(name.to_string(), defs.items.len());
                defs.items.push(def);
            }
        }
    }

    /// Defines `module`.`name` as an existing extern (of one store).
    pub fn define(
        &mut self,
        module: &str,
        name: &str,
        item: impl Into<Extern>,
    ) -> Result<&mut Self, Error> {
        self.insert(module, name, Definition::Extern(item.into()));
        Ok(self)
    }

    /// Defines `module`.`name` as a host function of type `ty`.
    pub fn func_new(
        &mut self,
        module: &str,
        name: &str,
        ty: FuncType,
        func: impl Fn(Caller<'_, T>, &[Val], &mut [Val]) -> Result<(), Trap> + Send + Sync + 'static,
    ) -> Result<&mut Self, Error> {
        self.insert(module, name, Definition::HostFunc(ty, Arc::new(func)));
        Ok(self)
    }

    /// Defines `module`.`name` as a host function from a typed closure
    /// (see [`Func::wrap`]): `|caller: Caller<'_, T>, a: i32, b: i32| -> Result<i32, Trap>`.
    pub fn func_wrap<Params, Results>(
        &mut self,
        module: &str,
        name: &str,
        func: impl IntoFunc<T, Params, Results>,
    ) -> Result<&mut Self, Error> {
        let (ty, call) = func.into_host();
        self.insert(module, name, Definition::RawHostFunc(ty, call));
        Ok(self)
    }

    /// Defines every export of `instance` under `module`.
    pub fn instance(
        &mut self,
        store: &mut Store<T>,
        module: &str,
        instance: Instance,
    ) -> Result<&mut Self, Error> {
        for (name, ext) in instance.exports(store) {
            self.define(module, &name, ext)?;
        }
        Ok(self)
    }

    /// The definition of `module`.`name`, as an extern of `store`.
    pub fn get(&mut self, store: &mut Store<T>, module: &str, name: &str) -> Option<Extern> {
        let i = *self.defs.index.get(module)?.get(name)?;
        Some(match &self.defs.items[i] {
            Definition::Extern(e) => *e,
            def => {
                let key = (store.core().id, i);
                if let Some(func) = self.made.get(&key) {
                    return Some(Extern::Func(*func));
                }
                let func = match def {
                    Definition::HostFunc(ty, f) => {
                        Func::new_arc(store, ty.clone(), f.clone()).ok()?
                    }
                    Definition::RawHostFunc(ty, f) => {
                        Func::new_raw(store, ty.clone(), f.clone()).ok()?
                    }
                    Definition::Extern(_) => unreachable!("handled above"),
                };
                self.made.insert(key, func);
                Extern::Func(func)
            }
        })
    }

    /// Resolves `module`'s imports and instantiates it.
    pub fn instantiate(
        &mut self,
        store: &mut Store<T>,
        module: &Module,
    ) -> Result<Instance, Error> {
        if !module.engine().same(&self.engine) {
            return Err(Error::Type(
                "module was compiled by a different engine than the linker's".into(),
            ));
        }
        let mut imports = Vec::with_capacity(module.info().imports.len());
        for imp in &module.info().imports {
            let ext = self.get(store, &imp.module, &imp.name).ok_or_else(|| {
                Error::Link(format!("unknown import `{}`.`{}`", imp.module, imp.name))
            })?;
            imports.push(ext);
        }
        Instance::new(store, module, &imports)
    }
}

macro_rules! into_extern {
    ($($t:ident),*) => {$(
        impl From<crate::$t> for Extern {
            fn from(v: crate::$t) -> Extern { Extern::$t(v) }
        }
    )*};
}
into_extern!(Func, Memory, Table, Global);

#[cfg(test)]
mod tests {
    use crate::{Caller, Engine, Linker, Module, Store};

    /// A clone shares the definitions (cheaply) and materialises host
    /// functions in its own stores; defining in one side leaves the other
    /// as it was.
    #[test]
    fn clones_share_definitions_copy_on_write() {
        let engine = Engine::default();
        let module = Module::new(
            &engine,
            r#"(module (import "h" "f" (func $f (result i32)))
                 (func (export "run") (result i32) (call $f)))"#,
        )
        .unwrap();
        let mut base = Linker::<()>::new(&engine);
        base.func_wrap("h", "f", |_: Caller<'_, ()>| 1i32).unwrap();
        let mut other = base.clone();
        other.func_wrap("h", "f", |_: Caller<'_, ()>| 2i32).unwrap();
        let mut again = base.clone();
        for (linker, want) in [(&mut base, 1), (&mut other, 2), (&mut again, 1)] {
            let mut store = Store::new(&engine, ());
            let inst = linker.instantiate(&mut store, &module).unwrap();
            let run = inst
                .get_typed_func::<(), i32, _>(&mut store, "run")
                .unwrap();
            assert_eq!(run.call(&mut store, ()).unwrap(), want);
        }
        let mut store = Store::new(&engine, ());
        assert!(base.get(&mut store, "h", "g").is_none());
        assert!(base.get(&mut store, "x", "f").is_none());
    }
}
