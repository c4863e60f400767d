/* The messages' names, constructors and the Hello check: see msg.h. */
#include "msg.h"

#include <errno.h>

const char *msg_type_name(MsgType t) {
    static const char *const names[_MSG_TYPE_MAX] = {
        [MSG_HELLO] = "Hello",
        [MSG_EXEC] = "Exec",
        [MSG_STARTED] = "Started",
        [MSG_DATA] = "Data",
        [MSG_STDIN_CLOSE] = "StdinClose",
        [MSG_STDIN_ACK] = "StdinAck",
        [MSG_RESIZE] = "Resize",
        [MSG_SIGNAL] = "Signal",
        [MSG_EXITED] = "Exited",
        [MSG_EXIT_ACK] = "ExitAck",
        [MSG_ERROR] = "Error",
        [MSG_STATUS_REQUEST] = "StatusRequest",
        [MSG_STATUS] = "Status",
        [MSG_PING] = "Ping",
        [MSG_PONG] = "Pong",
        [MSG_SHUTDOWN] = "Shutdown",
        [MSG_SHUTDOWN_REPLY] = "ShutdownReply",
        [MSG_CONNECT] = "Connect",
        [MSG_CONNECTED] = "Connected",
        [MSG_HOST_STATUS_REQUEST] = "HostStatusRequest",
        [MSG_HOST_STATUS] = "HostStatus",
        [MSG_HOST_START] = "HostStart",
        [MSG_HOST_STOP] = "HostStop",
        [MSG_HOST_STOPPED] = "HostStopped",
        [MSG_CONSOLE_ATTACH] = "ConsoleAttach",
        [MSG_CONSOLE_ATTACHED] = "ConsoleAttached",
        [MSG_ATTACH] = "Attach",
        [MSG_ATTACHED] = "Attached",
    };
    if ((int)t <= 0 || t >= _MSG_TYPE_MAX) {
        return "unknown";
    }
    return names[t];
}

Msg msg_hello(const char *software) {
    return (Msg){
        .type = MSG_HELLO,
        .hello = {.major = WIRE_VERSION_MAJOR, .minor = WIRE_VERSION_MINOR, .software = software},
    };
}

Msg msg_error(WireError code, const char *message) {
    return (Msg){.type = MSG_ERROR, .error = {.code = code, .message = message}};
}

int wire_check_hello(const Msg *m) {
    if (m->type != MSG_HELLO || m->hello.major != WIRE_VERSION_MAJOR) {
        return -EPROTONOSUPPORT;
    }
    return 0;
}
