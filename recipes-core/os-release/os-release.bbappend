# In the ml-inference distro, BUILD_ID is the commit of the checkout that holds
# meta-inference: the commit the appliance package is built from, and what the service
# reports in its server metadata.
BUILD_ID:ml-inference = "${INFERENCE_BUILD_ID}"
OS_RELEASE_FIELDS:append:ml-inference = " BUILD_ID"

# INFERENCE_BUILD_ID follows the checkout's HEAD: parse this recipe afresh every time.
BB_DONT_CACHE:ml-inference = "1"
