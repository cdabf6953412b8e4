/*
 * faasm.c: the convenience wrappers of faasm.h, and the entry point the
 * host uses for calls chained by function pointer.
 */
#include "faasm/faasm.h"

/*
 * __faasm_chain_ptr starts a new Faaslet of this module that calls the
 * function at table index `idx`. The host enters it here: an exported
 * function of a wasi-libc command module, so the linker wraps it to run
 * the C constructors first. Its return value is the call's return code.
 */
__attribute__((export_name("__faasm_call_ptr"))) int __faasm_call_ptr(int idx) {
    FaasmFuncPtr f = (FaasmFuncPtr)(unsigned long)idx;
    return f();
}

long faasmGetInputSize(void) { return __faasm_read_input((unsigned char *)0, 0); }
void faasmGetInput(unsigned char *buffer, long bufferLen) { __faasm_read_input(buffer, bufferLen); }
void faasmSetOutput(const unsigned char *output, long outputLen) {
    __faasm_write_output(output, outputLen);
}

unsigned int faasmChainNamed(const char *name, const unsigned char *input, long inputSize) {
    return __faasm_chain_name(name, input, inputSize);
}
unsigned int faasmChain(FaasmFuncPtr funcPtr, const unsigned char *input, long inputSize) {
    return __faasm_chain_ptr((int (*)())funcPtr, input, inputSize);
}
int faasmAwaitCall(unsigned int messageId) { return __faasm_await_call(messageId); }
int faasmAwaitCallOutput(unsigned int messageId, char **output, int *outputLen) {
    return __faasm_await_call_output(messageId, output, outputLen);
}

long faasmReadStateSize(const char *key) { return __faasm_read_state(key, (unsigned char *)0, 0); }
void faasmReadState(const char *key, unsigned char *buffer, long bufferLen) {
    __faasm_read_state(key, buffer, bufferLen);
}
unsigned char *faasmReadStatePtr(const char *key, long totalLen) {
    return __faasm_read_state_ptr(key, totalLen);
}
void faasmReadStateOffset(const char *key, long totalLen, long offset, unsigned char *buffer,
                          long bufferLen) {
    __faasm_read_state_offset(key, totalLen, offset, buffer, bufferLen);
}
unsigned char *faasmReadStateOffsetPtr(const char *key, long totalLen, long offset, long len) {
    return __faasm_read_state_offset_ptr(key, totalLen, offset, len);
}
void faasmWriteState(const char *key, const unsigned char *data, long dataLen) {
    __faasm_write_state(key, data, dataLen);
}
void faasmWriteStateOffset(const char *key, long totalLen, long offset, const unsigned char *data,
                           long dataLen) {
    __faasm_write_state_offset(key, totalLen, offset, data, dataLen);
}
void faasmFlagStateDirty(const char *key, long totalLen) { __faasm_flag_state_dirty(key, totalLen); }
void faasmFlagStateOffsetDirty(const char *key, long totalLen, long offset, long len) {
    __faasm_flag_state_offset_dirty(key, totalLen, offset, len);
}
void faasmPushState(const char *key) { __faasm_push_state(key); }
void faasmPushStatePartial(const char *key) { __faasm_push_state_partial(key); }
void faasmPushStatePartialMask(const char *key, const char *maskKey) {
    __faasm_push_state_partial_mask(key, maskKey);
}
void faasmPullState(const char *key, long stateLen) { __faasm_pull_state(key, stateLen); }
void faasmLockStateRead(const char *key) { __faasm_lock_state_read(key); }
void faasmUnlockStateRead(const char *key) { __faasm_unlock_state_read(key); }
void faasmLockStateWrite(const char *key) { __faasm_lock_state_write(key); }
void faasmUnlockStateWrite(const char *key) { __faasm_unlock_state_write(key); }
void faasmLockStateGlobalRead(const char *key) { __faasm_lock_state_global_read(key); }
void faasmUnlockStateGlobalRead(const char *key) { __faasm_unlock_state_global_read(key); }
void faasmLockStateGlobalWrite(const char *key) { __faasm_lock_state_global_write(key); }
void faasmUnlockStateGlobalWrite(const char *key) { __faasm_unlock_state_global_write(key); }
void faasmAppendState(const char *key, const unsigned char *data, long dataLen) {
    __faasm_append_state(key, data, dataLen);
}
void faasmReadAppendedState(const char *key, unsigned char *buffer, long bufferLen, long nElems) {
    __faasm_read_appended_state(key, buffer, bufferLen, nElems);
}
void faasmClearAppendedState(const char *key) { __faasm_clear_appended_state(key); }
unsigned int faasmGetConfFlag(const char *key) { return __faasm_conf_flag(key); }
