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

/// Resolves a module's imports by `(module, name)` and instantiates it.
///
/// Host functions defined with [`Linker::func_new`] are store-independent:
/// one linker serves any number of stores.
pub struct Linker<T> {
    engine: crate::engine::Engine,
    defs: HashMap<(String, String), Definition<T>>,
    /// Host functions already materialised per store: (store id, key) → Func.
    made: HashMap<(u64, String, String), Func>,
}

impl<T> std::fmt::Debug for Linker<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Linker")
            .field("definitions", &self.defs.len())
            .finish()
    }
}

impl<T: 'static> Linker<T> {
    /// An empty linker.
    pub fn new(engine: &crate::engine::Engine) -> Linker<T> {
        Linker {
            engine: engine.clone(),
            defs: HashMap::new(),
            made: HashMap::new(),
        }
    }

    /// Defines `module`.`name` as an existing extern (of one store).
    pub fn define(
        &mut self,
        module: &str,
        name: &str,
        item: impl Into<Extern>,
    ) -> Result<&mut Self, Error> {
        self.defs.insert(
            (module.into(), name.into()),
            Definition::Extern(item.into()),
        );
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
        self.defs.insert(
            (module.into(), name.into()),
            Definition::HostFunc(ty, Arc::new(func)),
        );
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
        self.defs.insert(
            (module.into(), name.into()),
            Definition::RawHostFunc(ty, call),
        );
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
        let def = self
            .defs
            .get(&(module.to_string(), name.to_string()))?
            .clone();
        Some(match def {
            Definition::Extern(e) => e,
            Definition::HostFunc(..) | Definition::RawHostFunc(..) => {
                let key = (store.core().id, module.to_string(), name.to_string());
                if let Some(func) = self.made.get(&key) {
                    return Some(Extern::Func(*func));
                }
                let func = match def {
                    Definition::HostFunc(ty, f) => Func::new_arc(store, ty, f).ok()?,
                    Definition::RawHostFunc(ty, f) => Func::new_raw(store, ty, f).ok()?,
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
