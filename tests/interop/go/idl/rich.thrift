// Every Thrift type, a declared exception and the error paths of a Kitex server.
namespace go rich

enum Color { RED = 1, GREEN = 2, BLUE = 3 }

struct Inner {
    1: i32 id,
    2: string name
}

struct AllTypes {
    1: bool flag,
    2: byte tiny,
    3: i16 small,
    4: i32 medium,
    5: i64 large,
    6: double ratio,
    7: string text,
    8: binary blob,
    9: list<i32> numbers,
    10: set<string> tags,
    11: map<string, Inner> index,
    12: Inner inner,
    13: Color color,
    14: list<Inner> inners,
    15: map<i64, list<string>> nested
}

exception RichError {
    1: i32 code,
    2: string reason
}

service Rich {
    AllTypes roundtrip(1: AllTypes value)          // returns value unchanged
    string raise_declared(1: i32 code, 2: string reason) throws (1: RichError err)  // always throws RichError{code, reason}
    string sleep(1: i32 millis)                    // sleeps, returns "slept <millis>"
    string fail(1: string message)                 // returns errors.New(message)
    string biz(1: i32 code, 2: string message, 3: map<string, string> extra)  // BizStatusError with extra
    string crash(1: string message)                // panics with message
}
