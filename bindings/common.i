/* Declarations shared by every language's module: status codes, their texts, the version. */
%{
#include "libsync/libsync.h"
%}

%constant int SYNC_OK = SYNC_OK;
%constant int SYNC_PENDING = SYNC_PENDING;
%constant int SYNC_EINVAL = SYNC_EINVAL;
%constant int SYNC_ENOMEM = SYNC_ENOMEM;
%constant int SYNC_EPARSE = SYNC_EPARSE;
%constant int SYNC_EMESSAGE = SYNC_EMESSAGE;
%constant int SYNC_ETOOBIG = SYNC_ETOOBIG;
%constant int SYNC_ETOODEEP = SYNC_ETOODEEP;
%constant int SYNC_ENOHANDLER = SYNC_ENOHANDLER;
%constant int SYNC_EREJECTED = SYNC_EREJECTED;
%constant int SYNC_EHANDLER = SYNC_EHANDLER;
%constant int SYNC_EIO = SYNC_EIO;
%constant int SYNC_ECORRUPT = SYNC_ECORRUPT;
%constant int SYNC_ECLOSED = SYNC_ECLOSED;
%constant int SYNC_ESTATE = SYNC_ESTATE;
%constant int SYNC_ESEND = SYNC_ESEND;
%constant int SYNC_ENET = SYNC_ENET;
%constant int SYNC_ELIMIT = SYNC_ELIMIT;
%constant int SYNC_EUNSUPPORTED = SYNC_EUNSUPPORTED;
%constant int SYNC_ETIMEDOUT = SYNC_ETIMEDOUT;

const char *sync_strerror(int status);
const char *sync_error_last(void);
const char *sync_version_string(void);
int sync_version_number(void);
